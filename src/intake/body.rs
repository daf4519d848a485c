//! Receiving a message body, whatever the ingress: our `Received:` line first, then the
//! client's bytes as they stream in, hashed on the way (the SHA-256 of the message as the
//! client sent it travels on the envelope).

use crate::spool::{Incoming, SpooledMessage};
use sha2::{Digest, Sha256};
use std::io;
use std::path::Path;

pub struct BodyWriter {
    file: Incoming,
    /// Over the client's bytes only: not our `Received:` line, not what filters change.
    hash: Sha256,
    /// A byte above 127 was seen (an ingress without a BODY= parameter must tell).
    eight_bit: bool,
}

/// A finished body and its hash.
pub struct ReceivedBody {
    pub message: SpooledMessage,
    /// Lower-case hex.
    pub sha256: String,
    /// The client's bytes hold 8-bit data.
    pub eight_bit: bool,
}

impl BodyWriter {
    /// Starts the body in `file` with our trace header (not part of the hash).
    pub async fn start(mut file: Incoming, received: &str) -> io::Result<BodyWriter> {
        file.write(received.as_bytes()).await?;
        Ok(BodyWriter {
            file,
            hash: Sha256::new(),
            eight_bit: false,
        })
    }

    /// The client's bytes, dot-unstuffed, as received.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hash.update(data);
        self.eight_bit = self.eight_bit || !data.is_ascii();
        self.file.write(data).await
    }

    pub fn id(&self) -> &str {
        self.file.id()
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Bytes written so far, our header included.
    pub fn size(&self) -> u64 {
        self.file.size()
    }

    pub async fn finish(self) -> io::Result<ReceivedBody> {
        let sha256 = hex(&self.hash.finalize());
        let message = self.file.finish().await?;
        Ok(ReceivedBody {
            message,
            sha256,
            eight_bit: self.eight_bit,
        })
    }

    /// Deletes the partial body.
    pub fn discard(self) {
        self.file.discard();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hash_covers_the_client_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = Incoming::create(dir.path(), "H1").unwrap();
        let mut w = BodyWriter::start(file, "Received: x\r\n").await.unwrap();
        w.write(b"Subject: a\r\n\r\n").await.unwrap();
        w.write(b"body\r\n").await.unwrap();
        let body = w.finish().await.unwrap();
        // sha256 of "Subject: a\r\n\r\nbody\r\n", as `sha256sum` gives it.
        assert_eq!(
            body.sha256,
            hex(&Sha256::digest(b"Subject: a\r\n\r\nbody\r\n"))
        );
        let written = std::fs::read(&body.message.path).unwrap();
        assert_eq!(written, b"Received: x\r\nSubject: a\r\n\r\nbody\r\n");
        assert_eq!(body.message.size, written.len() as u64);
    }
}
