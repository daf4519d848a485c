//! PEM blocks with RFC 1421 headers. The strict RFC 7468 readers (rustls-pki-types, der)
//! refuse headers, but the legacy OpenSSL encrypted key carries its cipher and IV in them
//! (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: AES-256-CBC,<iv>`), so key files are read here.
//! Pure: bytes in, blocks out.

use base64::Engine;
use zeroize::Zeroizing;

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block.
pub struct Block {
    /// What the block says it holds, e.g. `RSA PRIVATE KEY`.
    pub label: String,
    /// `Name: value` lines before the base64 body, in order (only legacy encrypted keys
    /// have them).
    pub headers: Vec<(String, String)>,
    /// The decoded body. May be a private key: wiped on drop.
    pub data: Zeroizing<Vec<u8>>,
}

impl Block {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("line {line}: BEGIN {label} has no matching END line")]
    Unterminated { label: String, line: usize },
    #[error("line {line}: {label} block: invalid base64 ({message})")]
    Base64 {
        label: String,
        line: usize,
        message: String,
    },
}

/// Every block in `text`, in order. Text between blocks (comments, OpenSSL's
/// `Bag Attributes`) is skipped, as OpenSSL does.
pub fn blocks(text: &[u8]) -> Result<Vec<Block>, PemError> {
    let mut out = Vec::new();
    let mut lines = text
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii_end())
        .enumerate();
    while let Some((begin_at, line)) = lines.next() {
        let Some(label) = label_of(line, b"-----BEGIN ") else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body = Zeroizing::new(String::new());
        let mut in_headers = true;
        let mut closed = false;
        for (_, line) in lines.by_ref() {
            if line == end.as_bytes() {
                closed = true;
                break;
            }
            let text = String::from_utf8_lossy(line);
            if in_headers {
                if let Some((name, value)) = text.split_once(':') {
                    headers.push((name.trim().to_string(), value.trim().to_string()));
                    continue;
                }
                // RFC 1421 continuation line: more of the previous header's value.
                if let (Some(last), Some(b' ' | b'\t')) = (headers.last_mut(), line.first()) {
                    last.1.push_str(text.trim());
                    continue;
                }
                in_headers = false;
            }
            body.push_str(text.trim());
        }
        if !closed {
            return Err(PemError::Unterminated {
                label,
                line: begin_at + 1,
            });
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| PemError::Base64 {
                label: label.clone(),
                line: begin_at + 1,
                message: e.to_string(),
            })?;
        out.push(Block {
            label,
            headers,
            data: Zeroizing::new(data),
        });
    }
    Ok(out)
}

/// `-----BEGIN RSA PRIVATE KEY-----` → `RSA PRIVATE KEY`.
fn label_of(line: &[u8], prefix: &[u8]) -> Option<String> {
    let rest = line.trim_ascii_start().strip_prefix(prefix)?;
    let label = rest.strip_suffix(b"-----")?;
    std::str::from_utf8(label).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_body_and_text_between() {
        let text = b"Bag Attributes\r\n    localKeyID: 01\r\n\
            -----BEGIN RSA PRIVATE KEY-----\r\n\
            Proc-Type: 4,ENCRYPTED\r\n\
            DEK-Info: AES-256-CBC,\r\n 00FF\r\n\
            \r\n\
            aGVs\r\nbG8=\r\n\
            -----END RSA PRIVATE KEY-----\r\n\
            -----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        let b = blocks(text).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "RSA PRIVATE KEY");
        assert_eq!(b[0].header("proc-type"), Some("4,ENCRYPTED"));
        assert_eq!(b[0].header("DEK-Info"), Some("AES-256-CBC,00FF"));
        assert_eq!(&b[0].data[..], b"hello");
        assert_eq!(b[1].label, "CERTIFICATE");
        assert!(b[1].headers.is_empty());
        assert_eq!(&b[1].data[..], &[0, 1, 2]);
    }

    #[test]
    fn broken_blocks_are_named() {
        let e = blocks(b"x\n-----BEGIN PRIVATE KEY-----\nAAAA\n")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "line 2: BEGIN PRIVATE KEY has no matching END line"
        );
        let e = blocks(b"-----BEGIN PRIVATE KEY-----\nA!A\n-----END PRIVATE KEY-----\n")
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("line 1: PRIVATE KEY block: invalid base64"),
            "{e}"
        );
        // An END for another label does not close the block.
        let e = blocks(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END CERTIFICATE-----\n")
            .err()
            .unwrap();
        assert!(matches!(e, PemError::Unterminated { .. }));
        assert!(blocks(b"no pem here").unwrap().is_empty());
    }
}
