//! `leadflow topics peek`: the last records of a topic, decoded, as JSON lines.

use crate::codec::registry_client::RegistryConfig;
use crate::kafka::KafkaSettings;

/// Prints the last `limit` records of `topic` as JSON lines: key, headers, decoded value.
pub async fn peek(
    settings: &KafkaSettings,
    registry: &RegistryConfig,
    topic: &str,
    limit: usize,
) -> anyhow::Result<()> {
    use rdkafka::message::Message;
    let registry = crate::codec::RegistryClient::with_config(registry)?;
    let (settings, name) = (settings.clone(), topic.to_string());
    let mut last = std::collections::VecDeque::with_capacity(limit + 1);
    let last = tokio::task::spawn_blocking(move || {
        crate::kafka::read::for_each_to_end(
            &settings,
            &name,
            std::time::Duration::from_secs(120),
            |m| {
                last.push_back(m);
                if last.len() > limit {
                    last.pop_front();
                }
            },
        )
        .map(|_| last)
    })
    .await??;
    for m in &last {
        if let Some(Ok((id, _))) = m.payload().map(crate::codec::unframe) {
            // Fills the cache print_record reads; an unknown id is shown as such.
            let _ = registry.schema_by_id(id).await;
        }
        print_record(m, &registry)?;
    }
    Ok(())
}

fn print_record(
    m: &rdkafka::message::OwnedMessage,
    registry: &crate::codec::RegistryClient,
) -> anyhow::Result<()> {
    use rdkafka::message::{Headers, Message};
    let headers: serde_json::Map<String, serde_json::Value> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let value = match m.payload().map(crate::codec::unframe) {
        Some(Ok((id, datum))) => match registry.cached(id) {
            Some(schema) => crate::codec::to_json(&schema, datum)?,
            None => serde_json::json!(format!("<schema id {id}>")),
        },
        _ => serde_json::json!(m.payload().map(|p| String::from_utf8_lossy(p).into_owned())),
    };
    let line = serde_json::json!({
        "partition": m.partition(),
        "offset": m.offset(),
        "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": headers,
        "value": value,
    });
    println!("{line}");
    Ok(())
}
