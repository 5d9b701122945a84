//! Kubeconfig client certificates: when they expire, so an expiring certificate is a warning
//! a month ahead and a metric, not a silently broken lock (the seed's admins checked this by
//! hand).
//!
//! The certificate read is the one the kubeconfig's current context uses
//! (`client-certificate-data`, or the `client-certificate` file, relative to the kubeconfig's
//! directory). A kubeconfig that authenticates otherwise (token, exec plugin) has no expiry
//! to report.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kube::config::{AuthInfo, Kubeconfig};

use crate::ha::status::CertExpiry;

/// Warn this long before a client certificate expires.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read kubeconfig: {0}")]
    Read(String),
    #[error("kubeconfig has no current-context naming a user")]
    NoUser,
    #[error("kubeconfig user {0:?} is not defined")]
    UnknownUser(String),
    #[error("cannot read client certificate {path}: {source}")]
    CertFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client-certificate-data is not base64: {0}")]
    Base64(String),
    #[error("client certificate is not a PEM or DER X.509 certificate: {0}")]
    Parse(String),
}

/// The client certificate of one kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientCert {
    pub user: String,
    /// The certificate's subject, e.g. `O=system:masters, CN=kubernetes-admin`.
    pub subject: String,
    pub not_after: SystemTime,
}

/// How soon a certificate expires, judged at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Fine {
        remaining: Duration,
    },
    /// Within [`WARN_BEFORE`] of expiring.
    Soon {
        remaining: Duration,
    },
    Expired {
        ago: Duration,
    },
}

impl Expiry {
    pub fn at(not_after: SystemTime, now: SystemTime) -> Expiry {
        match not_after.duration_since(now) {
            Ok(remaining) if remaining > WARN_BEFORE => Expiry::Fine { remaining },
            Ok(remaining) if !remaining.is_zero() => Expiry::Soon { remaining },
            Ok(_) => Expiry::Expired {
                ago: Duration::ZERO,
            },
            Err(e) => Expiry::Expired { ago: e.duration() },
        }
    }
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = |d: &Duration| d.as_secs() / 86_400;
        match self {
            Expiry::Fine { remaining } => write!(f, "valid for {} more days", days(remaining)),
            Expiry::Soon { remaining } if days(remaining) == 0 => {
                write!(f, "EXPIRES in {} hours", remaining.as_secs() / 3600)
            }
            Expiry::Soon { remaining } => write!(f, "EXPIRES in {} days", days(remaining)),
            Expiry::Expired { ago } => write!(f, "EXPIRED {} days ago", days(ago)),
        }
    }
}

/// The client certificate `path`'s current context uses; `Ok(None)` if it uses none.
pub fn client_cert(path: &Path) -> Result<Option<ClientCert>, CertError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| CertError::Read(e.to_string()))?;
    let (user, auth) = current_user(&kubeconfig)?;
    let der = match certificate_bytes(auth, path)? {
        Some(bytes) => to_der(&bytes)?,
        None => return Ok(None),
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::Parse(e.to_string()))?;
    let secs = cert.validity().not_after.timestamp();
    let not_after = match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    };
    Ok(Some(ClientCert {
        user,
        subject: cert.subject().to_string(),
        not_after,
    }))
}

fn current_user(kubeconfig: &Kubeconfig) -> Result<(String, &AuthInfo), CertError> {
    let context = kubeconfig
        .current_context
        .as_deref()
        .and_then(|name| kubeconfig.contexts.iter().find(|c| c.name == name))
        .or(match kubeconfig.contexts.as_slice() {
            [only] => Some(only),
            _ => None,
        })
        .and_then(|c| c.context.as_ref());
    let user = match context.and_then(|c| c.user.clone()) {
        Some(user) => user,
        None => return Err(CertError::NoUser),
    };
    let auth = kubeconfig
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
        .ok_or_else(|| CertError::UnknownUser(user.clone()))?;
    Ok((user, auth))
}

fn certificate_bytes(auth: &AuthInfo, kubeconfig: &Path) -> Result<Option<Vec<u8>>, CertError> {
    if let Some(data) = &auth.client_certificate_data {
        let compact: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| CertError::Base64(e.to_string()));
    }
    let Some(file) = &auth.client_certificate else {
        return Ok(None);
    };
    let file = Path::new(file);
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        kubeconfig.parent().unwrap_or(Path::new(".")).join(file)
    };
    std::fs::read(&path)
        .map(Some)
        .map_err(|source| CertError::CertFile { path, source })
}

/// PEM (the usual) or DER to DER; a bundle yields its first certificate (the client's).
fn to_der(bytes: &[u8]) -> Result<Vec<u8>, CertError> {
    if bytes.starts_with(b"-----") || bytes.iter().take(64).all(|b| b.is_ascii()) {
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| CertError::Parse(e.to_string()))?;
            if pem.label == "CERTIFICATE" {
                return Ok(pem.contents);
            }
        }
        return Err(CertError::Parse("no CERTIFICATE block".into()));
    }
    Ok(bytes.to_vec())
}

/// Expiry of each kubeconfig's client certificate, in the form the stats control state
/// exports (`kubeconfig_cert_expiry_timestamp`).
pub fn expiries(kubeconfigs: &[PathBuf]) -> Vec<CertExpiry> {
    kubeconfigs
        .iter()
        .map(|path| match client_cert(path) {
            Ok(cert) => CertExpiry {
                kubeconfig: path.clone(),
                not_after: cert.map(|c| c.not_after),
                error: None,
            },
            Err(e) => CertExpiry {
                kubeconfig: path.clone(),
                not_after: None,
                error: Some(e.to_string()),
            },
        })
        .collect()
}

/// [`expiries`], logging a warning for every certificate that expires within
/// [`WARN_BEFORE`] of `now` (or has expired) and for every kubeconfig that cannot be read.
/// Meant to run at start and then periodically (e.g. hourly) per instance.
pub fn check_and_warn(instance: &str, kubeconfigs: &[PathBuf], now: SystemTime) -> Vec<CertExpiry> {
    let found = expiries(kubeconfigs);
    for e in &found {
        let kubeconfig = e.kubeconfig.display();
        match (&e.not_after, &e.error) {
            (_, Some(error)) => {
                tracing::warn!(instance, %kubeconfig, %error, "cannot read the kubeconfig's client certificate")
            }
            (Some(not_after), None) => match Expiry::at(*not_after, now) {
                Expiry::Fine { .. } => {}
                expiry => tracing::warn!(
                    instance, %kubeconfig, expires = %httpdate(*not_after), "kubeconfig client certificate {expiry}"
                ),
            },
            (None, None) => {}
        }
    }
    found
}

/// `YYYY-MM-DD HH:MM:SS UTC`, for messages.
pub fn httpdate(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_certificate_with_more_than_thirty_days_left_is_fine() {
        let now = UNIX_EPOCH + 1000 * DAY;
        assert!(matches!(
            Expiry::at(now + 31 * DAY, now),
            Expiry::Fine { .. }
        ));
    }

    #[test]
    fn a_certificate_expiring_in_ten_days_is_soon() {
        let now = UNIX_EPOCH + 1000 * DAY;
        assert_eq!(
            Expiry::at(now + 10 * DAY, now),
            Expiry::Soon {
                remaining: 10 * DAY
            }
        );
        assert_eq!(
            Expiry::at(now + 10 * DAY, now).to_string(),
            "EXPIRES in 10 days"
        );
    }

    #[test]
    fn a_certificate_past_not_after_is_expired() {
        let now = UNIX_EPOCH + 1000 * DAY;
        assert_eq!(
            Expiry::at(now - 2 * DAY, now),
            Expiry::Expired { ago: 2 * DAY }
        );
        assert_eq!(
            Expiry::at(now - 2 * DAY, now).to_string(),
            "EXPIRED 2 days ago"
        );
    }

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(httpdate(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            httpdate(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31 23:59:59 UTC"
        );
    }
}
