//! What leadflow's Kafka clients do with librdkafka's log lines and error events: log them
//! through `tracing` (redacted, like every log line) and count errors by client and code.
//!
//! librdkafka reports most errors as events and recovers by itself (a broker restart, a
//! network blip, a coordinator moving): those are logged and counted, never fatal. Only an
//! error librdkafka marks fatal makes the client unusable; callers check for it.

use std::sync::{Arc, Mutex};

use metrics::counter;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::metrics as m;

/// Logs a librdkafka log line at its level.
pub fn log_line(client: &'static str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", client, facility, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", client, facility, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", client, facility, "{message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", client, facility, "{message}")
        }
    }
}

/// Logs and counts an error event of a client (`leadflow_kafka_errors_total{client, code}`).
pub fn client_error(client: &'static str, error: &KafkaError, reason: &str) {
    let code = error_code_name(error);
    counter!(m::KAFKA_ERRORS, "client" => client, "code" => code).increment(1);
    if is_fatal(error) {
        tracing::error!(client, %error, reason, "fatal Kafka client error");
    } else if matches!(code, "transport" | "all_brokers_down") {
        // librdkafka's own log line already says which broker and why.
        tracing::debug!(client, %error, reason, "Kafka client error (librdkafka retries)");
    } else {
        tracing::warn!(client, %error, reason, "Kafka client error (librdkafka retries)");
    }
}

/// A short, stable name for the error's code (a metric label: low cardinality).
pub fn error_code_name(error: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::BrokerTransportFailure) => "transport",
        Some(C::AllBrokersDown) => "all_brokers_down",
        Some(C::Resolve) => "resolve",
        Some(C::Authentication) | Some(C::SaslAuthenticationFailed) => "authentication",
        Some(C::SSL) => "ssl",
        Some(C::MessageTimedOut) => "message_timed_out",
        Some(C::RequestTimedOut) | Some(C::OperationTimedOut) => "timed_out",
        Some(C::MessageSizeTooLarge) | Some(C::MessageBatchTooLarge) => "message_too_large",
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) | Some(C::UnknownPartition) => {
            "unknown_topic_or_partition"
        }
        Some(C::TopicAuthorizationFailed)
        | Some(C::GroupAuthorizationFailed)
        | Some(C::ClusterAuthorizationFailed) => "authorization",
        Some(C::NotLeaderForPartition) | Some(C::LeaderNotAvailable) => "leader_moved",
        Some(C::NotCoordinator) | Some(C::CoordinatorNotAvailable) => "coordinator_moved",
        Some(C::Fatal) => "fatal",
        Some(_) => "other",
        None => "client",
    }
}

/// Whether librdkafka marks the error fatal: the client instance cannot be used any more.
pub fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageConsumptionFatal(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
}

/// The context of clients with no callbacks of their own (admin, readers, producers). It
/// remembers the last error event, so that a client that cannot do its work can say why
/// (a metadata request only times out; the SASL failure behind it is an error event).
#[derive(Clone)]
pub struct Logged {
    client: &'static str,
    /// (code name, text) of the last error event.
    last_error: Arc<Mutex<Option<(&'static str, String)>>>,
}

impl Logged {
    pub fn new(client: &'static str) -> Logged {
        Logged {
            client,
            last_error: Arc::default(),
        }
    }

    /// The last error event's text, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, text)| text.clone())
    }

    /// The last error event's text if it is one that waiting does not fix (credentials,
    /// TLS).
    pub fn last_error_if_permanent(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(code, _)| matches!(*code, "authentication" | "ssl" | "authorization"))
            .map(|(_, text)| text.clone())
    }
}

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_line(self.client, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(self.client, &error, reason);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        // "All brokers are down" follows each broker's own error, which says why.
        let code = error_code_name(&error);
        if code != "all_brokers_down" || last.is_none() {
            *last = Some((code, format!("{error}: {reason}")));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Logged {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fatal_errors_are_fatal() {
        assert!(is_fatal(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::Fatal
        )));
        assert!(is_fatal(&KafkaError::MessageProduction(
            RDKafkaErrorCode::Fatal
        )));
        assert!(!is_fatal(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!is_fatal(&KafkaError::Global(
            RDKafkaErrorCode::AllBrokersDown
        )));
        assert_eq!(
            error_code_name(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)),
            "all_brokers_down"
        );
    }
}
