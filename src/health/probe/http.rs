//! HTTP_GET and SSL_GET: keepalived's request, byte for byte, and its verdict on the answer.
//!
//! Request: `GET <path> HTTP/1.<0|1>`, `User-Agent: KeepAliveClient`, `Connection: close` for
//! `http_protocol` 1.0C and 1.1, and `Host:` = the url's, else the check's `virtualhost`, else
//! `<connect ip>:<port>`. The whole response is read (until the server closes, or
//! Content-Length bytes of body arrived); each read may take up to `connect_timeout`, as in
//! keepalived. Verdict, in keepalived's order: no data → fail; status not in the url's
//! `status_code` ranges → fail; `digest` set and MD5 (lowercase hex) of the body bytes as
//! received (chunked encoding is not decoded, as keepalived's genhash does not) differs →
//! fail.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{HttpCheck, UrlCheck};
use crate::health::checker::ProbeResult;
use crate::health::error::ProbeError;
use crate::health::probe::tcp::{ConnectError, connect_with};

/// A response head larger than this is not an HTTP health answer.
const MAX_HEAD: usize = 64 * 1024;

pub async fn probe(
    check: &HttpCheck,
    url_index: usize,
    timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> ProbeResult {
    let default_url;
    let url = match check.urls.get(url_index) {
        Some(url) => url,
        None => {
            default_url = UrlCheck {
                path: "/".into(),
                status: vec![(200, 299)],
                digest: None,
                virtualhost: None,
            };
            &default_url
        }
    };
    let tcp = match connect_with(check.connect, check.bind, timeout).await {
        Ok(stream) => stream,
        Err(ConnectError::Local(reason)) => return ProbeResult::NotRun(reason),
        Err(ConnectError::Probe(error)) => return ProbeResult::Fail(error),
    };
    let request = request_for(check, url);
    let outcome = match tls {
        None => exchange(tcp, &request, timeout).await,
        Some(connector) => {
            let name = ServerName::IpAddress(check.connect.ip().into());
            match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
                Ok(Ok(stream)) => exchange(stream, &request, timeout).await,
                Ok(Err(e)) => Err(ProbeError::Tls(e.to_string())),
                Err(_) => Err(ProbeError::Tls(format!("no handshake within {timeout:?}"))),
            }
        }
    };
    match outcome.and_then(|response| judge(url, &response)) {
        Ok(()) => ProbeResult::Pass,
        Err(error) => ProbeResult::Fail(error),
    }
}

/// keepalived's `request_template` / `request_template_ipv6`.
pub fn request_for(check: &HttpCheck, url: &UrlCheck) -> String {
    let (minor, connection) = match check.http_protocol.as_str() {
        "1.1" => (1, "Connection: close\r\n"),
        "1.0C" => (0, "Connection: close\r\n"),
        _ => (0, ""),
    };
    let host = match url.virtualhost.as_ref().or(check.virtualhost.as_ref()) {
        Some(vhost) => vhost.clone(),
        None => match check.connect {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        },
    };
    format!(
        "GET {} HTTP/1.{minor}\r\nUser-Agent: KeepAliveClient\r\n{connection}Host: {host}\r\n\r\n",
        url.path
    )
}

/// What came back: the status and the body's MD5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body_md5: String,
    pub body_len: usize,
}

async fn exchange<S>(
    mut stream: S,
    request: &str,
    timeout: Duration,
) -> Result<Response, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, stream.write_all(request.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ProbeError::Send(e.into())),
        Err(_) => return Err(ProbeError::ReadTimeout(timeout)),
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut parsed: Option<(u16, Option<usize>)> = None;
    let mut md5 = Md5::new();
    let mut body_len = 0usize;
    let mut received_any = false;
    loop {
        let n = match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
            Err(_) => return Err(ProbeError::ReadTimeout(timeout)),
            Ok(Ok(n)) => n,
            // A TLS peer that closes without close_notify: keepalived (not tls_compliant)
            // takes that as the end of the response too.
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof && received_any => 0,
            Ok(Err(e)) => return Err(ProbeError::Read(e.into())),
        };
        if n == 0 {
            break;
        }
        received_any = true;
        let mut chunk = &buf[..n];
        if parsed.is_none() {
            head.extend_from_slice(chunk);
            let Some(end) = find_head_end(&head) else {
                if head.len() > MAX_HEAD {
                    return Err(ProbeError::Malformed("response head too large".into()));
                }
                continue;
            };
            parsed = Some(parse_head(&head[..end])?);
            let rest = head.split_off(end + 4);
            chunk = &[];
            take_body(&mut md5, &mut body_len, parsed, &rest);
        }
        take_body(&mut md5, &mut body_len, parsed, chunk);
        if let Some((_, Some(length))) = parsed
            && body_len >= length
        {
            break;
        }
    }
    if !received_any {
        return Err(ProbeError::EmptyResponse);
    }
    let Some((status, _)) = parsed else {
        return Err(ProbeError::Malformed("no end of headers".into()));
    };
    Ok(Response {
        status,
        body_md5: hex(&md5.finalize()),
        body_len,
    })
}

/// Digests body bytes, never past Content-Length (keepalived does the same).
fn take_body(
    md5: &mut Md5,
    body_len: &mut usize,
    parsed: Option<(u16, Option<usize>)>,
    data: &[u8],
) {
    let take = match parsed {
        Some((_, Some(length))) => data.len().min(length.saturating_sub(*body_len)),
        _ => data.len(),
    };
    md5.update(&data[..take]);
    *body_len += take;
}

fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Status code and Content-Length, if any.
fn parse_head(head: &[u8]) -> Result<(u16, Option<usize>), ProbeError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| ProbeError::Malformed(format!("status line {status_line:?}")))?;
    let content_length = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            value.trim().parse::<usize>().ok()
        } else {
            None
        }
    });
    Ok((status, content_length))
}

/// keepalived's `http_handle_response` order: status first, then digest.
pub fn judge(url: &UrlCheck, response: &Response) -> Result<(), ProbeError> {
    let ranges: &[(u16, u16)] = if url.status.is_empty() {
        &[(200, 299)]
    } else {
        &url.status
    };
    if !ranges
        .iter()
        .any(|&(low, high)| (low..=high).contains(&response.status))
    {
        return Err(ProbeError::Status {
            path: url.path.clone(),
            status: response.status,
            expected: format_ranges(ranges),
        });
    }
    if let Some(expected) = &url.digest
        && !expected.eq_ignore_ascii_case(&response.body_md5)
    {
        return Err(ProbeError::Digest {
            path: url.path.clone(),
            got: response.body_md5.clone(),
            expected: expected.clone(),
        });
    }
    Ok(())
}

fn format_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(low, high)| {
            if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(protocol: &str, connect: &str, vhost: Option<&str>) -> HttpCheck {
        HttpCheck {
            connect: connect.parse().unwrap(),
            bind: None,
            urls: vec![],
            virtualhost: vhost.map(Into::into),
            http_protocol: protocol.into(),
        }
    }

    fn url(status: Vec<(u16, u16)>, digest: Option<&str>) -> UrlCheck {
        UrlCheck {
            path: "/healthz".into(),
            status,
            digest: digest.map(Into::into),
            virtualhost: None,
        }
    }

    #[test]
    fn request_matches_keepalived_template() {
        let req = request_for(&check("1.0", "192.0.2.1:1936", None), &url(vec![], None));
        assert_eq!(
            req,
            "GET /healthz HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 192.0.2.1:1936\r\n\r\n"
        );
        let req = request_for(&check("1.1", "[2001:db8::1]:80", None), &url(vec![], None));
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains("Connection: close\r\nHost: [2001:db8::1]:80\r\n"),
            "{req}"
        );
        let req = request_for(
            &check("1.0C", "192.0.2.1:80", Some("www.example")),
            &url(vec![], None),
        );
        assert!(
            req.contains("HTTP/1.0\r\n")
                && req.contains("Connection: close\r\nHost: www.example\r\n")
        );
    }

    #[test]
    fn status_ranges_and_lists_are_inclusive() {
        let u = url(vec![(200, 299), (400, 499), (503, 503)], None);
        let resp = |status| Response {
            status,
            body_md5: String::new(),
            body_len: 0,
        };
        for ok in [200, 299, 404, 503] {
            assert!(judge(&u, &resp(ok)).is_ok(), "{ok} must pass");
        }
        for bad in [302, 500, 502, 504] {
            assert!(judge(&u, &resp(bad)).is_err(), "{bad} must fail");
        }
    }

    #[test]
    fn empty_status_list_means_2xx() {
        let u = url(vec![], None);
        let r = Response {
            status: 301,
            body_md5: String::new(),
            body_len: 0,
        };
        assert!(matches!(
            judge(&u, &r),
            Err(ProbeError::Status { status: 301, .. })
        ));
    }

    #[test]
    fn head_parsing_reads_status_and_length() {
        let head = b"HTTP/1.1 204 No Content\r\nServer: x\r\ncontent-length: 12";
        assert_eq!(parse_head(head).unwrap(), (204, Some(12)));
        assert!(parse_head(b"garbage").is_err());
    }
}
