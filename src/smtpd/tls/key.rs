//! A listener's private key from PEM: PKCS#8, PKCS#1 (`RSA PRIVATE KEY`), SEC1
//! (`EC PRIVATE KEY`), encrypted PKCS#8 (PBES2: PBKDF2 or scrypt, AES-CBC or 3DES), and
//! the legacy OpenSSL encrypted PEM (`Proc-Type: 4,ENCRYPTED` + `DEK-Info`) that
//! `openssl genrsa -aes256` wrote before OpenSSL 3 and aws-smtp-relay documents. Pure: the
//! caller reads the file and the passphrase; the result is DER for rustls.

use super::pem::{self, Block, PemError};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use md5::{Digest, Md5};
use pkcs8::der::asn1::AnyRef;
use pkcs8::der::{Decode, Tag, Tagged};
use pkcs8::pkcs5::EncryptionScheme;
use pkcs8::pkcs5::pbes2::EncryptionScheme as Pbes2Cipher;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use zeroize::Zeroizing;

const PKCS8: &str = "PRIVATE KEY";
const PKCS8_ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";
const PKCS1: &str = "RSA PRIVATE KEY";
const SEC1: &str = "EC PRIVATE KEY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Pem(#[from] PemError),
    #[error(
        "no PEM private key found (expected BEGIN PRIVATE KEY, ENCRYPTED PRIVATE KEY, \
         RSA PRIVATE KEY or EC PRIVATE KEY{})",
        found_list(.found)
    )]
    NoKey { found: Vec<String> },
    #[error("holds {0} private keys; give one")]
    SeveralKeys(usize),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Malformed(String),
    /// Bad padding after decryption, or plaintext that is not DER: a wrong passphrase
    /// looks exactly like a damaged file, so the two are one error.
    #[error("wrong passphrase or corrupt key")]
    WrongPassphrase,
    #[error("is encrypted ({0}) and no passphrase was given")]
    NeedsPassphrase(String),
    #[error("is not encrypted, but a passphrase was given")]
    NotEncrypted,
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!("; found {}", found.join(", "))
    }
}

/// What rustls accepts once decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pkcs8,
    Pkcs1,
    Sec1,
}

/// The ciphers of legacy PEM encryption, all in CBC mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl Cipher {
    fn parse(name: &str) -> Option<Cipher> {
        match name.to_ascii_uppercase().as_str() {
            "AES-128-CBC" => Some(Cipher::Aes128),
            "AES-192-CBC" => Some(Cipher::Aes192),
            "AES-256-CBC" => Some(Cipher::Aes256),
            "DES-EDE3-CBC" => Some(Cipher::DesEde3),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cipher::Aes128 => "AES-128-CBC",
            Cipher::Aes192 => "AES-192-CBC",
            Cipher::Aes256 => "AES-256-CBC",
            Cipher::DesEde3 => "DES-EDE3-CBC",
        }
    }

    /// (key, IV) lengths in bytes.
    fn lengths(self) -> (usize, usize) {
        match self {
            Cipher::Aes128 => (16, 16),
            Cipher::Aes192 => (24, 16),
            Cipher::Aes256 => (32, 16),
            Cipher::DesEde3 => (24, 8),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Protection {
    None,
    /// `ENCRYPTED PRIVATE KEY`; the scheme is in the DER. Holds a description for messages.
    Pkcs8(String),
    /// `DEK-Info: <cipher>,<iv>`.
    Legacy {
        cipher: Cipher,
        iv: Vec<u8>,
    },
}

/// The one private key a PEM file holds, as found (still encrypted if it was).
pub struct PemKey {
    format: Format,
    protection: Protection,
    der: Zeroizing<Vec<u8>>,
}

/// Finds the private key among the blocks of `text` (a file may also hold the
/// certificates, or the `EC PARAMETERS` that `openssl ecparam -genkey` writes first) and
/// checks what it can without the passphrase.
pub fn parse(text: &[u8]) -> Result<PemKey, KeyError> {
    let blocks = pem::blocks(text)?;
    let is_key = |b: &&Block| b.label.ends_with("PRIVATE KEY");
    let keys: Vec<&Block> = blocks.iter().filter(is_key).collect();
    let block = match keys.as_slice() {
        [one] => *one,
        [] => {
            return Err(KeyError::NoKey {
                found: blocks.iter().map(|b| b.label.clone()).collect(),
            });
        }
        many => return Err(KeyError::SeveralKeys(many.len())),
    };
    let (format, protection) = match block.label.as_str() {
        PKCS8_ENCRYPTED => (Format::Pkcs8, Protection::Pkcs8(pkcs8_scheme(&block.data)?)),
        PKCS8 => (Format::Pkcs8, legacy_protection(block)?),
        PKCS1 => (Format::Pkcs1, legacy_protection(block)?),
        SEC1 => (Format::Sec1, legacy_protection(block)?),
        other => {
            return Err(KeyError::Unsupported(format!(
                "BEGIN {other}: not a key type TLS here can use (RSA, ECDSA or Ed25519 \
                 in PKCS#8, PKCS#1 or SEC1)"
            )));
        }
    };
    if format == Format::Pkcs8 && protection == Protection::None && !block.headers.is_empty() {
        return Err(KeyError::Malformed(
            "BEGIN PRIVATE KEY with PEM headers: PKCS#8 has none (an encrypted PKCS#8 key \
             is BEGIN ENCRYPTED PRIVATE KEY)"
                .into(),
        ));
    }
    Ok(PemKey {
        format,
        protection,
        der: block.data.clone(),
    })
}

impl PemKey {
    /// How the key is encrypted, for messages; `None` for a plain key.
    pub fn encryption(&self) -> Option<String> {
        match &self.protection {
            Protection::None => None,
            Protection::Pkcs8(scheme) => Some(format!("encrypted PKCS#8, {scheme}")),
            Protection::Legacy { cipher, .. } => Some(format!(
                "OpenSSL PEM encryption, DEK-Info {}",
                cipher.name()
            )),
        }
    }

    /// The key as rustls takes it. `passphrase` must be given exactly when the key is
    /// encrypted.
    pub fn into_der(self, passphrase: Option<&[u8]>) -> Result<PrivateKeyDer<'static>, KeyError> {
        let plain: Zeroizing<Vec<u8>> = match (&self.protection, passphrase) {
            (Protection::None, None) => self.der.clone(),
            (Protection::None, Some(_)) => return Err(KeyError::NotEncrypted),
            (_, None) => {
                return Err(KeyError::NeedsPassphrase(
                    self.encryption().unwrap_or_default(),
                ));
            }
            (Protection::Pkcs8(_), Some(pass)) => decrypt_pkcs8(&self.der, pass)?,
            (Protection::Legacy { cipher, iv }, Some(pass)) => {
                decrypt_legacy(*cipher, iv, &self.der, pass)?
            }
        };
        let bytes = plain.to_vec();
        Ok(match self.format {
            Format::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes)),
            Format::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(bytes)),
            Format::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(bytes)),
        })
    }
}

/// Describes the PBES2 scheme ("PBES2, PBKDF2-HmacWithSha256, AES-256-CBC"), refusing
/// what cannot be decrypted before any passphrase is asked for.
fn pkcs8_scheme(der: &[u8]) -> Result<String, KeyError> {
    // An algorithm the pkcs5 crate does not know fails here already: PKCS#12 PBE
    // (`pbeWithSHA1And3-KeyTripleDES-CBC`, OpenSSL 1.0's `pkcs8 -topk8` default) above all.
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der).map_err(|e| {
        KeyError::Unsupported(format!(
            "ENCRYPTED PRIVATE KEY: cannot read its encryption ({e}); mailchute reads PBES2 \
             (PBKDF2 or scrypt, with AES-CBC or DES-EDE3-CBC): re-encrypt it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
        ))
    })?;
    match info.encryption_algorithm {
        EncryptionScheme::Pbes2(p) => {
            let kdf = match (p.kdf.pbkdf2(), p.kdf.is_scrypt()) {
                (Some(params), _) => format!("PBKDF2-{:?}", params.prf),
                (None, true) => "scrypt".to_string(),
                (None, false) => format!("KDF {}", p.kdf.oid()),
            };
            let cipher = match p.encryption {
                Pbes2Cipher::Aes128Cbc { .. } => "AES-128-CBC".to_string(),
                Pbes2Cipher::Aes192Cbc { .. } => "AES-192-CBC".to_string(),
                Pbes2Cipher::Aes256Cbc { .. } => "AES-256-CBC".to_string(),
                Pbes2Cipher::Aes128Gcm { .. } => "AES-128-GCM".to_string(),
                Pbes2Cipher::Aes256Gcm { .. } => "AES-256-GCM".to_string(),
                Pbes2Cipher::DesEde3Cbc { .. } => "DES-EDE3-CBC".to_string(),
                other => format!("cipher {}", other.oid()),
            };
            Ok(format!("PBES2, {kdf}, {cipher}"))
        }
        EncryptionScheme::Pbes1(p) => Err(KeyError::Unsupported(format!(
            "ENCRYPTED PRIVATE KEY uses PBES1 ({:?}), which is obsolete: re-encrypt it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
            p.encryption
        ))),
        _ => Err(KeyError::Unsupported(
            "ENCRYPTED PRIVATE KEY: an encryption scheme mailchute does not read: re-encrypt \
             it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
                .into(),
        )),
    }
}

fn decrypt_pkcs8(der: &[u8], pass: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der)
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    match info.decrypt(pass) {
        // `decrypt` has checked that the plaintext is one DER SEQUENCE.
        Ok(doc) => Ok(Zeroizing::new(doc.as_bytes().to_vec())),
        Err(pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::DecryptFailed))
        | Err(pkcs8::Error::Asn1(_)) => Err(KeyError::WrongPassphrase),
        Err(pkcs8::Error::EncryptedPrivateKey(e)) => Err(KeyError::Unsupported(format!(
            "ENCRYPTED PRIVATE KEY: {e} (mailchute reads PBES2 with PBKDF2 or scrypt and \
             AES-CBC or DES-EDE3-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes)"
        ))),
        Err(e) => Err(KeyError::Malformed(e.to_string())),
    }
}

/// `Proc-Type: 4,ENCRYPTED` + `DEK-Info: <cipher>,<iv hex>`, or no headers at all.
fn legacy_protection(block: &Block) -> Result<Protection, KeyError> {
    let proc_type = block.header("Proc-Type");
    let dek_info = block.header("DEK-Info");
    let bad = |m: String| KeyError::Malformed(format!("BEGIN {}: {m}", block.label));
    let encrypted = |p: &str| p.replace(' ', "").eq_ignore_ascii_case("4,ENCRYPTED");
    let dek_info = match (proc_type, dek_info) {
        (None, None) => return Ok(Protection::None),
        (Some(p), _) if !encrypted(p) => {
            return Err(bad(format!("Proc-Type: {p}: expected \"4,ENCRYPTED\"")));
        }
        (Some(_), Some(d)) => d,
        (Some(_), None) => return Err(bad("Proc-Type: 4,ENCRYPTED without DEK-Info".into())),
        (None, Some(_)) => return Err(bad("DEK-Info without Proc-Type: 4,ENCRYPTED".into())),
    };
    let Some((name, iv_hex)) = dek_info.split_once(',') else {
        return Err(bad(format!(
            "DEK-Info: {dek_info}: expected \"<cipher>,<IV in hex>\""
        )));
    };
    let name = name.trim();
    let cipher = Cipher::parse(name).ok_or_else(|| {
        KeyError::Unsupported(format!(
            "BEGIN {}: DEK-Info cipher {name} is not supported (AES-128-CBC, AES-192-CBC, \
             AES-256-CBC, DES-EDE3-CBC are): re-encrypt it with `openssl rsa -aes256 \
             -traditional` or `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
            block.label
        ))
    })?;
    let iv = hex(iv_hex.trim())
        .filter(|iv| iv.len() == cipher.lengths().1)
        .ok_or_else(|| {
            bad(format!(
                "DEK-Info: IV {:?}: expected {} hex digits for {}",
                iv_hex.trim(),
                cipher.lengths().1 * 2,
                cipher.name()
            ))
        })?;
    Ok(Protection::Legacy { cipher, iv })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

fn decrypt_legacy(
    cipher: Cipher,
    iv: &[u8],
    data: &[u8],
    pass: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let (key_len, _) = cipher.lengths();
    // OpenSSL's PEM_do_header: the salt is the first 8 bytes of the IV.
    let key = bytes_to_key(pass, &iv[..8], key_len);
    let mut buf = Zeroizing::new(data.to_vec());
    let len = match cipher {
        Cipher::Aes128 => cbc_decrypt::<cbc::Decryptor<aes::Aes128>>(&key, iv, &mut buf),
        Cipher::Aes192 => cbc_decrypt::<cbc::Decryptor<aes::Aes192>>(&key, iv, &mut buf),
        Cipher::Aes256 => cbc_decrypt::<cbc::Decryptor<aes::Aes256>>(&key, iv, &mut buf),
        Cipher::DesEde3 => cbc_decrypt::<cbc::Decryptor<des::TdesEde3>>(&key, iv, &mut buf),
    }?;
    buf.truncate(len);
    // One time in 256 a wrong passphrase still ends in valid padding; the garbage is then
    // almost never a DER SEQUENCE that fills the buffer exactly.
    match AnyRef::from_der(&buf) {
        Ok(any) if any.tag() == Tag::Sequence => Ok(buf),
        _ => Err(KeyError::WrongPassphrase),
    }
}

/// Decrypts in place; returns the plaintext length (the padding removed).
fn cbc_decrypt<D: KeyIvInit + BlockModeDecrypt>(
    key: &[u8],
    iv: &[u8],
    buf: &mut [u8],
) -> Result<usize, KeyError> {
    let mode = D::new_from_slices(key, iv)
        .map_err(|_| KeyError::Malformed("key or IV of the wrong length".into()))?;
    mode.decrypt_padded::<Pkcs7>(buf)
        .map(<[u8]>::len)
        .map_err(|_| KeyError::WrongPassphrase)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration, as PEM encryption uses it:
/// D_1 = MD5(pass ‖ salt), D_i = MD5(D_{i-1} ‖ pass ‖ salt), key = D_1 ‖ D_2 ‖ … cut to
/// length.
fn bytes_to_key(pass: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    while key.len() < len {
        let mut h = Md5::new();
        h.update(&prev[..]);
        h.update(pass);
        h.update(salt);
        let d = h.finalize();
        key.extend_from_slice(&d);
        prev.clear();
        prev.extend_from_slice(&d);
    }
    key.truncate(len);
    key
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod tests;
