//! The envelope as S3 user metadata (`x-amz-meta-mailchute-*`), or in a sidecar object.
//!
//! S3 user metadata travels in HTTP headers: ASCII only, and at most 2 KB for all keys and
//! values together. Non-ASCII values (SMTPUTF8 addresses) are percent-encoded; when the
//! envelope does not fit (many recipients), the object carries only
//! `mailchute-envelope: sidecar` (with the id and SHA-256) and the full envelope goes to
//! `KEY.envelope.json` beside it.

use crate::envelope::Envelope;

/// S3's limit on user metadata, keys and values together, in bytes.
const MAX_METADATA_BYTES: usize = 2048;

/// The metadata of one object, and the sidecar body when the envelope did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMetadata {
    /// Names without the `x-amz-meta-` prefix (the SDK adds it), values ASCII.
    pub entries: Vec<(String, String)>,
    /// The full envelope as JSON, to be stored as `KEY.envelope.json`.
    pub sidecar: Option<Vec<u8>>,
}

/// The metadata for an object holding the message for `rcpts`.
pub fn for_object(envelope: &Envelope, rcpts: &[String]) -> ObjectMetadata {
    let mut always = vec![("mailchute-id".to_string(), encode(&envelope.id))];
    if !envelope.sha256.is_empty() {
        always.push(("mailchute-sha256".to_string(), envelope.sha256.clone()));
    }
    let sender = if envelope.mail_from.is_empty() {
        "<>"
    } else {
        &envelope.mail_from
    };
    let mut entries = always.clone();
    entries.push(("mailchute-sender".into(), encode(sender)));
    entries.push(("mailchute-recipients".into(), encode(&rcpts.join(", "))));
    if let Some(addr) = &envelope.client.addr {
        entries.push(("mailchute-client".into(), encode(addr)));
    }
    if size(&entries) <= MAX_METADATA_BYTES {
        return ObjectMetadata {
            entries,
            sidecar: None,
        };
    }
    always.push(("mailchute-envelope".into(), "sidecar".into()));
    let sidecar = serde_json::json!({
        "id": envelope.id,
        "sender": envelope.mail_from,
        "recipients": rcpts,
        "client": envelope.client.addr,
        "helo": envelope.client.helo,
        "listener": envelope.listener,
        "received_at": envelope.received_at,
        "sha256": envelope.sha256,
        "size": envelope.size,
    });
    ObjectMetadata {
        entries: always,
        sidecar: Some(sidecar.to_string().into_bytes()),
    }
}

/// The key of the sidecar object of `key`.
pub fn sidecar_key(key: &str) -> String {
    format!("{key}.envelope.json")
}

/// How S3 counts user metadata: the bytes of every key and value.
fn size(entries: &[(String, String)]) -> usize {
    entries.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Printable ASCII stays; `%`, control characters and every byte of a non-ASCII
/// character become `%XX` (RFC 3986 style, so any URL decoder reads it back).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Body, ClientInfo};

    fn envelope(from: &str) -> Envelope {
        Envelope {
            id: "ID1".into(),
            mail_from: from.into(),
            rcpts: vec![],
            client: ClientInfo {
                addr: Some("192.0.2.1".into()),
                ..Default::default()
            },
            listener: "mx".into(),
            received_at: 0,
            body: Body::SevenBit,
            smtputf8: false,
            size: 10,
            sha256: "ff00".into(),
        }
    }

    #[test]
    fn the_envelope_fits_in_metadata() {
        let m = for_object(&envelope("jörg@example.org"), &["a@x".into(), "b@x".into()]);
        assert_eq!(m.sidecar, None);
        let get = |k: &str| {
            m.entries
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("mailchute-sender"), Some("j%C3%B6rg@example.org"));
        assert_eq!(get("mailchute-recipients"), Some("a@x, b@x"));
        assert_eq!(get("mailchute-client"), Some("192.0.2.1"));
        assert_eq!(get("mailchute-sha256"), Some("ff00"));
        assert_eq!(get("mailchute-id"), Some("ID1"));
        assert_eq!(for_object(&envelope(""), &[]).entries[2].1, "<>");
    }

    #[test]
    fn a_big_envelope_goes_to_a_sidecar() {
        let rcpts: Vec<String> = (0..200).map(|i| format!("user{i}@example.org")).collect();
        let m = for_object(&envelope("s@x"), &rcpts);
        assert!(
            m.entries
                .contains(&("mailchute-envelope".into(), "sidecar".into()))
        );
        assert!(size(&m.entries) <= MAX_METADATA_BYTES);
        let json: serde_json::Value = serde_json::from_slice(m.sidecar.as_ref().unwrap()).unwrap();
        assert_eq!(json["recipients"].as_array().unwrap().len(), 200);
        assert_eq!(sidecar_key("a/b.eml"), "a/b.eml.envelope.json");
    }

    #[test]
    fn encoding_keeps_printable_ascii() {
        assert_eq!(encode("a b<>@%\r\n\u{e9}"), "a b<>@%25%0D%0A%C3%A9");
    }
}
