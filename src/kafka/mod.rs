//! Kafka clients, in one place: the consumer's and the durable producer's
//! settings (with why vigil insists on each), client creation, the error
//! log every client reports through ([`log`]), and [`ensure_topics`], the
//! start-time check every pipeline kind makes of the topics it names.
//!
//! Deliberately not here: what is consumed or produced. The source, the
//! sinks and the batch job's output use these clients.

pub mod log;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::config::Pipeline;
use log::{ErrorLog, LoggedContext};

crate::label_values! {
    /// A client's part in a pipeline: the `client` label of
    /// `vigil_kafka_client_errors_total`.
    pub enum Client {
        /// The source's consumer.
        Consumer => "consumer",
        /// The producer of alerts and dead letters.
        Producer => "producer",
        /// The producer of a batch job's results.
        Results => "results",
    }
}

/// The librdkafka properties every client of a pipeline starts from: its
/// own `properties` (TLS, SASL, tuning) and the bootstrap servers.
fn base_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    config.set("bootstrap.servers", brokers);
    config
}

/// The consumer settings of a pipeline: tuning defaults, then the
/// pipeline's own properties, then what vigil's correctness depends on.
pub fn consumer_config(pipeline: &Pipeline) -> ClientConfig {
    let source = &pipeline.source;
    let mut config = ClientConfig::new();
    config
        .set("client.id", format!("vigil-{}", pipeline.name))
        // Kafka's default. A consumer whose session lapses loses its
        // partitions, and with them its users' detector state; 45 s
        // outlasts a broker restart (a single broker here: about 25 s). A
        // crashed process's partitions move after as long.
        .set("session.timeout.ms", "45000")
        .set("statistics.interval.ms", "5000");
    for (k, v) in &source.properties {
        config.set(k, v);
    }
    config
        .set("bootstrap.servers", &source.brokers)
        .set("group.id", &source.group)
        .set("auto.offset.reset", source.start_from.as_str())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "false")
        // Offsets are committed by the poll thread, synchronously, once a
        // batch's effects are durable: never by librdkafka when a record is
        // handed out, and never by a background commit that could land
        // after a revocation's commit and move the group's offset back.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "false");
    config
}

/// The producer settings vigil insists on for anything whose delivery
/// gates a commit (alerts, dead letters, a batch window's results); the
/// pipeline's `properties` (for TLS or SASL) come first so these win.
pub fn durable_producer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    delivery_timeout: Duration,
) -> ClientConfig {
    let mut config = base_config(brokers, properties);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Batches of alerts and dead letters, a few ms at most.
        .set("linger.ms", "5")
        // Retried inside librdkafka for this long, then it is a failure that
        // stops the pipeline rather than a commit past a lost record.
        .set("message.timeout.ms", delivery_timeout.as_millis().to_string());
    config
}

/// The producer of alerts, dead letters and batch results.
pub type DurableProducer = FutureProducer<LoggedContext>;

/// A [`DurableProducer`] from `config`, its errors counted and logged as
/// those of `pipeline`'s `client`.
pub fn create_producer(config: &ClientConfig, pipeline: &str, client: Client) -> KafkaResult<DurableProducer> {
    FutureProducer::from_config_and_context(config, LoggedContext { errors: ErrorLog::new(pipeline, client) })
}

/// Why the topics a pipeline names could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("creating a metadata client: {0}")]
    Client(KafkaError),
    #[error("Kafka did not answer: {0}")]
    Unreachable(KafkaError),
    /// The broker answered; these topics are not among its topics.
    #[error("topics missing: {}", .0.join(", "))]
    Missing(Vec<String>),
    #[error("the metadata request did not finish: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Every topic in `topics` must exist: the broker is not expected to
/// create them, and a typo should stop the start, not the run. Asks for
/// the metadata of all topics (asking for one by name may create it on a
/// broker that creates topics on demand).
pub async fn ensure_topics(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: Vec<String>,
) -> Result<(), TopicsError> {
    let consumer: BaseConsumer = base_config(brokers, properties).create().map_err(TopicsError::Client)?;
    let check = move || {
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(15)).map_err(TopicsError::Unreachable)?;
        let missing: Vec<String> = topics
            .into_iter()
            .filter(|t| !metadata.topics().iter().any(|m| m.name() == t && m.error().is_none()))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TopicsError::Missing(missing))
        }
    };
    // The metadata request blocks; a runtime's worker must not.
    tokio::task::spawn_blocking(check).await?
}

/// librdkafka's `message.max.bytes` when a pipeline does not set it.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The largest record a durable producer of `properties` may write to
/// `topic`: the smaller of the topic's `max.message.bytes`, as the broker
/// reports it, and the producer's `message.max.bytes`.
pub async fn record_limit(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
) -> Result<usize, TopicsError> {
    let producer_limit =
        properties.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
    let admin: AdminClient<DefaultClientContext> =
        base_config(brokers, properties).create().map_err(TopicsError::Client)?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let answers =
        admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options).await.map_err(TopicsError::Unreachable)?;
    let topic_limit = answers
        .into_iter()
        .next()
        .and_then(Result::ok)
        .and_then(|resource| resource.get("max.message.bytes").and_then(|e| e.value.as_deref()?.parse().ok()))
        .ok_or_else(|| TopicsError::Missing(vec![topic.to_owned()]))?;
    Ok(producer_limit.min(topic_limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(config: &'a ClientConfig, key: &str) -> Option<&'a str> {
        config.get(key)
    }

    #[test]
    fn the_durable_settings_win_over_the_pipelines_properties() {
        let properties: BTreeMap<String, String> =
            [("acks", "1"), ("security.protocol", "SASL_SSL")].map(|(k, v)| (k.into(), v.into())).into();
        let config = durable_producer_config("b:9092", &properties, Duration::from_secs(90));
        assert_eq!(get(&config, "acks"), Some("all"));
        assert_eq!(get(&config, "enable.idempotence"), Some("true"));
        assert_eq!(get(&config, "message.timeout.ms"), Some("90000"));
        assert_eq!(get(&config, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(get(&config, "bootstrap.servers"), Some("b:9092"));
    }
}
