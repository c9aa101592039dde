//! The `--tls-cert/--tls-key/--tls-ca` flags shared by `herdsman agent` and the
//! coordinator (`herdsman run --node`), and the refusal notices a TLS node prints.

use std::path::PathBuf;
use std::process::ExitCode;

use herdsman_cluster::{NodeTls, TlsFiles};

/// Mutual TLS for node sessions: all three flags, or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TlsFlags {
    /// This node's certificate chain (PEM). Encrypts node sessions; needs --tls-key and
    /// --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) every other node's certificate must be signed by.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
}

impl TlsFlags {
    /// Whether any of the flags was given.
    pub(crate) fn any(&self) -> bool {
        self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some()
    }

    /// Load the files, before anything starts. `Err` is the exit code after the error
    /// (naming the file) was printed.
    pub(crate) fn load(&self) -> Result<Option<NodeTls>, ExitCode> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            if self.any() {
                // clap enforces this; kept for callers that build the flags by hand.
                eprintln!("error: --tls-cert, --tls-key and --tls-ca go together");
                return Err(ExitCode::from(crate::run::EXIT_INVALID));
            }
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        };
        NodeTls::load(&files).map(Some).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(crate::run::EXIT_INVALID)
        })
    }
}
