//! Machine logs: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG`; and the one
//! library log event herdsman turns into a notice of its own, a refused TLS handshake.

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The `--log-format` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where ractor_cluster's listener reports a failed TLS handshake. It has no other way
/// to tell: the connection never becomes a session, so no session event is sent.
const LISTENER: &str = "ractor_cluster::net::listener";
/// How that report starts (ractor_cluster =0.16.5, `net/listener.rs`).
const HANDSHAKE_FAILED: &str = "Error establishing secure socket: ";

/// Why each incoming TLS handshake failed, as the node server's listener reported it.
pub(crate) type TlsRefusals = mpsc::UnboundedReceiver<String>;

/// Install the global subscriber: stderr, `RUST_LOG` (default `warn`), in `format`. The
/// returned receiver gets every refused incoming TLS handshake, whatever `RUST_LOG` says.
pub(crate) fn init(format: LogFormat) -> TlsRefusals {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(e) => {
            if std::env::var_os("RUST_LOG").is_some() {
                eprintln!("warning: ignoring RUST_LOG: {e}");
            }
            EnvFilter::new("warn")
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let only_handshakes = Targets::new().with_target(LISTENER, Level::WARN);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(stderr.with_filter(filter))
            .with(Refusals { tx }.with_filter(only_handshakes))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(stderr.json().with_filter(filter))
            .with(Refusals { tx }.with_filter(only_handshakes))
            .try_init(),
    };
    rx
}

struct Refusals {
    tx: mpsc::UnboundedSender<String>,
}

impl<S: tracing::Subscriber> Layer<S> for Refusals {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if let Some(why) = message.0.strip_prefix(HANDSHAKE_FAILED) {
            let _ = self.tx.send(why.to_string());
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
