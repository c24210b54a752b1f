//! The PostgreSQL connection every writer of the load generator uses.

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// A client whose connection runs in the background.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url} (is it up? scripts/stack up)"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("loadtest: postgres connection ended: {e}");
        }
    });
    Ok(client)
}
