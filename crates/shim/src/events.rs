//! Publishing task events to containerd over ttrpc, in order.

use std::time::SystemTime;

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::topics;
use tokio::sync::{mpsc, oneshot};

enum Item {
    Event(Envelope),
    Flush(oneshot::Sender<()>),
}

/// A queue drained by one task, so that events reach containerd in the
/// order they were published.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Item>,
    namespace: String,
}

/// One event with its topic.
pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    Delete(TaskDelete),
    Oom(TaskOOM),
    ExecAdded(TaskExecAdded),
    ExecStarted(TaskExecStarted),
    Paused(TaskPaused),
    Resumed(TaskResumed),
}

impl Event {
    fn topic(&self) -> &'static str {
        match self {
            Event::Create(_) => topics::TASK_CREATE_EVENT_TOPIC,
            Event::Start(_) => topics::TASK_START_EVENT_TOPIC,
            Event::Exit(_) => topics::TASK_EXIT_EVENT_TOPIC,
            Event::Delete(_) => topics::TASK_DELETE_EVENT_TOPIC,
            Event::Oom(_) => topics::TASK_OOM_EVENT_TOPIC,
            Event::ExecAdded(_) => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Event::ExecStarted(_) => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Event::Paused(_) => topics::TASK_PAUSED_EVENT_TOPIC,
            Event::Resumed(_) => topics::TASK_RESUMED_EVENT_TOPIC,
        }
    }

    fn message(&self) -> &dyn MessageDyn {
        match self {
            Event::Create(e) => e,
            Event::Start(e) => e,
            Event::Exit(e) => e,
            Event::Delete(e) => e,
            Event::Oom(e) => e,
            Event::ExecAdded(e) => e,
            Event::ExecStarted(e) => e,
            Event::Paused(e) => e,
            Event::Resumed(e) => e,
        }
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

impl Publisher {
    /// Starts the publishing task on the current runtime. With an empty
    /// address, events are only logged.
    pub fn start(ttrpc_address: &str, namespace: &str) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        let address = match ttrpc_address {
            "" => None,
            a if a.contains("://") => Some(a.to_string()),
            a => Some(format!("unix://{a}")),
        };
        tokio::spawn(drain(address, rx));
        Publisher {
            tx,
            namespace: namespace.to_string(),
        }
    }

    pub fn publish(&self, event: Event) {
        let message = event.message();
        log::debug!("event {}: {:?}", event.topic(), message);
        let envelope = Envelope {
            timestamp: Some(timestamp(SystemTime::now())).into(),
            namespace: self.namespace.clone(),
            topic: event.topic().to_string(),
            event: Some(Any {
                type_url: message.descriptor_dyn().full_name().to_string(),
                value: message.write_to_bytes_dyn().unwrap_or_default(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let _ = self.tx.send(Item::Event(envelope));
    }

    /// Waits until every event published so far has been sent (or dropped).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn drain(address: Option<String>, mut rx: mpsc::UnboundedReceiver<Item>) {
    let mut client: Option<EventsClient> = None;
    while let Some(item) = rx.recv().await {
        let envelope = match item {
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Item::Event(envelope) => envelope,
        };
        let Some(address) = &address else { continue };
        let request = ForwardRequest {
            envelope: Some(envelope).into(),
            ..Default::default()
        };
        for attempt in 1..=5 {
            if client.is_none() {
                match Client::connect(address).await {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => log::warn!("connect to containerd at {address}: {e}"),
                }
            }
            if let Some(c) = &client {
                match c
                    .forward(ttrpc::context::with_timeout(5_000_000_000), &request)
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        log::warn!(
                            "publish {} (attempt {attempt}): {e}",
                            request.envelope.topic
                        );
                        client = None;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
        }
    }
}
