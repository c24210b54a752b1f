//! Changelog topics: where a pipeline's detector state is kept, in Kafka,
//! beside the partitions it belongs to. Bytes only: what a record means is
//! the detectors' affair (`crate::detect::record`).
//!
//! One compacted topic per source topic, with as many partitions: the
//! state of a source partition's users is written to the changelog
//! partition of the same number ([`writer`]), so whoever is assigned the
//! source partition reads exactly its users back ([`restore`]). [`ensure`]
//! creates a missing changelog and refuses one that would break that.

pub mod restore;
pub mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::{base_config, create, CreateError};

/// The cleanup policy a changelog must have: the newest record of each
/// user is kept, however old.
const CLEANUP_POLICY: &str = "compact";

/// Why a changelog topic cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogTopicError {
    #[error("creating an admin client: {0}")]
    Client(CreateError),
    #[error("Kafka did not answer: {0}")]
    Unreachable(KafkaError),
    #[error("the source topic {0} does not exist")]
    NoSource(String),
    #[error("creating the changelog {topic}: {error}")]
    Create { topic: String, error: String },
    #[error(
        "the changelog {topic} has {found} partitions but the source topic {source_topic} has {expected}: a user's \
         state must sit in the partition of the same number as its rows. Delete the changelog (its state is then \
         lost: scripts/kafka topics --delete --topic {topic}) and vigil creates it again, or set state.changelog \
         to a new name"
    )]
    PartitionCount { topic: String, found: usize, source_topic: String, expected: usize },
    #[error(
        "the changelog {topic} has cleanup.policy={found}, which would delete users' state as it ages: make it \
         compact (scripts/kafka configs --alter --entity-type topics --entity-name {topic} --add-config \
         cleanup.policy=compact)"
    )]
    CleanupPolicy { topic: String, found: String },
    #[error("the metadata request did not finish: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Makes sure `changelog` can hold the state of `source`'s partitions:
/// creates it when missing (compacted, as many partitions as `source`, as
/// many replicas as its first partition has) and refuses it when it has
/// another partition count or does not compact.
pub async fn ensure(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    source: &str,
    changelog: &str,
) -> Result<(), ChangelogTopicError> {
    let config = base_config(brokers, properties);
    let consumer: BaseConsumer = create(&config, DefaultConsumerContext).map_err(ChangelogTopicError::Client)?;
    let admin: AdminClient<DefaultClientContext> =
        create(&config, DefaultClientContext).map_err(ChangelogTopicError::Client)?;
    let (source_owned, changelog_owned) = (source.to_owned(), changelog.to_owned());
    // (partitions, replicas) of the source, and partitions of the changelog
    // if it exists. All topics are asked for: asking for one by name may
    // create it on a broker that creates topics on demand.
    let shapes = tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(15))?;
        let shape = |name: &str| {
            metadata.topics().iter().find(|t| t.name() == name && t.error().is_none()).map(|t| {
                let replicas = t.partitions().first().map_or(1, |p| p.replicas().len());
                (t.partitions().len(), replicas)
            })
        };
        Ok::<_, KafkaError>((shape(&source_owned), shape(&changelog_owned)))
    })
    .await?
    .map_err(ChangelogTopicError::Unreachable)?;
    let (Some((expected, replicas)), found) = shapes else {
        return Err(ChangelogTopicError::NoSource(source.to_owned()));
    };
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    match found {
        None => create_changelog(&admin, &options, changelog, expected, replicas).await,
        Some((found, _)) if found != expected => Err(ChangelogTopicError::PartitionCount {
            topic: changelog.to_owned(),
            found,
            source_topic: source.to_owned(),
            expected,
        }),
        Some(_) => check_policy(&admin, &options, changelog).await,
    }
}

async fn create_changelog(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &str,
    partitions: usize,
    replicas: usize,
) -> Result<(), ChangelogTopicError> {
    let creating = |error: String| ChangelogTopicError::Create { topic: topic.to_owned(), error };
    let partitions = i32::try_from(partitions).map_err(|_| creating(format!("{partitions} partitions")))?;
    let replicas = i32::try_from(replicas.max(1)).map_err(|_| creating(format!("{replicas} replicas")))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas)).set("cleanup.policy", CLEANUP_POLICY);
    let answers = admin.create_topics([&new], options).await.map_err(ChangelogTopicError::Unreachable)?;
    for answer in answers {
        match answer {
            Ok(_) => {}
            // Another process of the group created it meanwhile.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(creating(code.to_string())),
        }
    }
    Ok(())
}

async fn check_policy(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &str,
) -> Result<(), ChangelogTopicError> {
    let answers = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], options)
        .await
        .map_err(ChangelogTopicError::Unreachable)?;
    let policy = answers
        .into_iter()
        .next()
        .and_then(Result::ok)
        .and_then(|resource| resource.get("cleanup.policy").and_then(|e| e.value.clone()))
        .unwrap_or_default();
    if policy == CLEANUP_POLICY {
        Ok(())
    } else {
        Err(ChangelogTopicError::CleanupPolicy { topic: topic.to_owned(), found: policy })
    }
}
