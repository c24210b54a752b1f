//! Kafka clients, in one place: the consumer's and the durable producer's
//! settings (with why vigil insists on each), client creation (whose
//! errors never hold a property's value: [`CreateError`]), the error log
//! every client reports through ([`log`]), and [`ensure_topics`], the
//! start-time check every pipeline kind makes of the topics it names.
//!
//! Deliberately not here: what is consumed or produced. The source, the
//! sinks and the batch job's output use these clients.

pub mod log;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;

use crate::config::{secret, Pipeline};
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
        /// The reader of changelogs, restoring state.
        Restorer => "restorer",
    }
}

/// The librdkafka properties every client of a pipeline starts from: its
/// own `properties` (TLS, SASL, tuning) and the bootstrap servers.
pub(crate) fn base_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
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

/// A Kafka client librdkafka would not create, told without the value of
/// any property: librdkafka's own message names a refused property and its
/// value, and a misspelled name (`sasl.pasword`) cannot be known for a
/// secret's by its name, so no refused value is ever shown.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// librdkafka refused a property: an unknown name, or a bad value.
    #[error("librdkafka refused the property {name}: {reason} (value of {name} hidden)")]
    Property { name: String, reason: String },
    /// librdkafka would not create the client for another reason: rdkafka's
    /// message, with the values of secret properties hidden.
    #[error("{0}")]
    Client(String),
}

impl CreateError {
    /// `err`, from creating a client of `config`, without its values.
    fn new(err: KafkaError, config: &ClientConfig) -> Self {
        match err {
            KafkaError::ClientConfig(_, reason, name, value) => {
                CreateError::Property { reason: secret::hide(&reason, [value.as_str()]), name }
            }
            other => {
                let names = config.config_map().into_keys().filter(|name| secret::is_secret_property(name));
                CreateError::Client(secret::hide(&other.to_string(), names.filter_map(|name| config.get(name))))
            }
        }
    }
}

/// A client of `config` with `context`. Every Kafka client of vigil is
/// created here, so none can print a property's value.
pub fn create<C: ClientContext, T: FromClientConfigAndContext<C>>(
    config: &ClientConfig,
    context: C,
) -> Result<T, CreateError> {
    T::from_config_and_context(config, context).map_err(|err| CreateError::new(err, config))
}

/// The producer of alerts, dead letters and batch results.
pub type DurableProducer = FutureProducer<LoggedContext>;

/// Offsets as a log line shows them: `topic/partition@offset`.
pub fn commit_list(tpl: &rdkafka::TopicPartitionList) -> Vec<String> {
    tpl.elements().iter().map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset())).collect()
}

/// Why a record of `producer` was not delivered: `error`, or, when the
/// producer failed for good (fenced by another process of the same
/// transactional id), that failure, which the records' own errors
/// ("purged in queue") do not tell.
pub fn undelivered(producer: &DurableProducer, error: KafkaError) -> KafkaError {
    match producer.client().fatal_error() {
        Some((code, _)) => KafkaError::MessageProduction(code),
        None => error,
    }
}

/// A [`DurableProducer`] from `config`, its errors counted and logged as
/// those of `pipeline`'s `client`.
pub fn create_producer(config: &ClientConfig, pipeline: &str, client: Client) -> Result<DurableProducer, CreateError> {
    create(config, LoggedContext { errors: ErrorLog::new(pipeline, client) })
}

/// Why the topics a pipeline names could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("creating a metadata client: {0}")]
    Client(CreateError),
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
    let consumer: BaseConsumer =
        create(&base_config(brokers, properties), DefaultConsumerContext).map_err(TopicsError::Client)?;
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
        create(&base_config(brokers, properties), DefaultClientContext).map_err(TopicsError::Client)?;
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

/// The broker's `transaction.max.timeout.ms`: the longest transaction it
/// lets a producer open (asked of the first broker the metadata names).
pub async fn max_transaction_timeout(
    brokers: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Duration, TopicsError> {
    let consumer: BaseConsumer =
        create(&base_config(brokers, properties), DefaultConsumerContext).map_err(TopicsError::Client)?;
    let broker = tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(15)).map_err(TopicsError::Unreachable)?;
        Ok::<_, TopicsError>(metadata.brokers().first().map(|b| b.id()))
    })
    .await??;
    let admin: AdminClient<DefaultClientContext> =
        create(&base_config(brokers, properties), DefaultClientContext).map_err(TopicsError::Client)?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let answers = admin
        .describe_configs(&[ResourceSpecifier::Broker(broker.unwrap_or(-1))], &options)
        .await
        .map_err(TopicsError::Unreachable)?;
    let millis: Option<u64> =
        answers.into_iter().next().and_then(Result::ok).and_then(|resource| {
            resource.get("transaction.max.timeout.ms").and_then(|e| e.value.as_deref()?.parse().ok())
        });
    // Kafka's default, should a broker not say.
    Ok(Duration::from_millis(millis.unwrap_or(900_000)))
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

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// librdkafka refuses these when the client is created, before it
    /// contacts any broker; its message holds the value, ours does not.
    #[test]
    fn a_refused_property_is_named_and_its_value_hidden() {
        let cases = [
            (("sasl.pasword", "hunter2-typo"), "No such configuration property"),
            (("security.protocol", "hunter2-proto"), "Invalid value"),
            (("ssl.key.password", "hunter2\0nul"), ""),
        ];
        for ((name, value), says) in cases {
            let config = durable_producer_config("127.0.0.1:1", &properties(&[(name, value)]), Duration::from_secs(1));
            let Err(err) = create_producer(&config, "p", Client::Producer) else { panic!("{name} accepted") };
            let (shown, debug) = (err.to_string(), format!("{err:?}"));
            assert!(!shown.contains("hunter2") && !debug.contains("hunter2"), "{shown} / {debug}");
            assert!(shown.contains(says), "{shown}");
            if let CreateError::Property { name: refused, .. } = &err {
                assert_eq!(refused, name);
                assert!(shown.contains(&format!("value of {name} hidden")), "{shown}");
            }
        }
    }

    #[test]
    fn other_creation_errors_hide_the_values_of_secret_properties() {
        let config = base_config("b:9092", &properties(&[("sasl.password", "hunter2"), ("acks", "all")]));
        let err = CreateError::new(KafkaError::ClientCreation("bad hunter2 for all".into()), &config);
        assert_eq!(err.to_string(), "Client creation error: bad *** for all");
    }
}
