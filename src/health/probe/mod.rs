//! The thin async shells: one probe each, returning a [`ProbeResult`]. All timing decisions
//! (when to probe, what a failure means) belong to [`crate::health::checker`].

pub mod http;
pub mod misc;
pub mod tcp;
pub mod tls;

use std::sync::Arc;

use crate::config::{Check, CheckKind};
use crate::health::checker::ProbeResult;
use crate::health::error::ProbeError;

/// A check ready to run: its settings plus what is built once (the TLS client config).
#[derive(Clone)]
pub struct Probe {
    check: Arc<Check>,
    /// SSL_GET only; the error if the TLS client could not be built (then every probe fails).
    tls: Option<Result<tokio_rustls::TlsConnector, String>>,
}

impl Probe {
    pub fn new(check: &Check) -> Probe {
        let tls = match check.kind {
            CheckKind::Ssl(_) => Some(tls::insecure_connector().map_err(|e| e.to_string())),
            _ => None,
        };
        Probe {
            check: Arc::new(check.clone()),
            tls,
        }
    }

    /// Runs one probe. `url` selects the url of an HTTP_GET/SSL_GET check.
    pub async fn run(&self, url: usize) -> ProbeResult {
        let timeout = self.check.connect_timeout;
        match &self.check.kind {
            CheckKind::Tcp(tcp) => tcp::probe(tcp.connect, tcp.bind, timeout).await,
            CheckKind::Http(http) => http::probe(http, url, timeout, None).await,
            CheckKind::Ssl(http) => match &self.tls {
                Some(Ok(connector)) => http::probe(http, url, timeout, Some(connector)).await,
                Some(Err(error)) => ProbeResult::Fail(ProbeError::Tls(error.clone())),
                None => ProbeResult::Fail(ProbeError::Tls("no TLS client".into())),
            },
            CheckKind::Misc(misc) => misc::probe(misc).await,
        }
    }
}
