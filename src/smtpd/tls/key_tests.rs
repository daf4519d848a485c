//! Fixtures are made by the openssl tool at test time (installed by scripts/test), and
//! what we decrypt is compared with openssl's own DER of the same key: an independent
//! reader, never our own encoder.

use super::*;
use std::path::Path;
use std::process::Command;

const PASS: &[u8] = b"s3cret pass";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command is needed for the key tests");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn der_of(key: PrivateKeyDer<'static>) -> (Format, Vec<u8>) {
    match key {
        PrivateKeyDer::Pkcs8(k) => (Format::Pkcs8, k.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(k) => (Format::Pkcs1, k.secret_pkcs1_der().to_vec()),
        PrivateKeyDer::Sec1(k) => (Format::Sec1, k.secret_sec1_der().to_vec()),
        other => panic!("unexpected {other:?}"),
    }
}

fn decode(dir: &Path, name: &str, pass: Option<&[u8]>) -> Result<(Format, Vec<u8>), KeyError> {
    parse(&read(dir, name))?.into_der(pass).map(der_of)
}

/// Decrypts `pem` and checks it against openssl's DER of the same key, without printing
/// the keys on failure.
fn assert_same_key(dir: &Path, pem: &str, pass: Option<&[u8]>, der: &str, format: Format) {
    let (got_format, got) = decode(dir, pem, pass).unwrap_or_else(|e| panic!("{pem}: {e}"));
    assert_eq!(got_format, format, "{pem}");
    let want = read(dir, der);
    assert!(
        got == want,
        "{pem}: decoded {} bytes, openssl's {der} has {}, and they differ",
        got.len(),
        want.len()
    );
}

/// An RSA and an EC key, each as openssl writes it plainly, with its DER in every form.
fn keys(dir: &Path) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa8.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "rsa8.pem", "-outform", "DER", "-out", "rsa8.der",
        ],
    );
    openssl(
        dir,
        &["rsa", "-in", "rsa8.pem", "-traditional", "-out", "rsa1.pem"],
    );
    openssl(
        dir,
        &[
            "rsa",
            "-in",
            "rsa8.pem",
            "-traditional",
            "-outform",
            "DER",
            "-out",
            "rsa1.der",
        ],
    );
    // `ecparam -genkey` writes an EC PARAMETERS block before the key.
    openssl(
        dir,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-out",
            "ec1.pem",
        ],
    );
    openssl(
        dir,
        &["ec", "-in", "ec1.pem", "-outform", "DER", "-out", "ec1.der"],
    );
    openssl(dir, &["pkey", "-in", "ec1.pem", "-out", "ec8.pem"]);
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ec1.pem", "-outform", "DER", "-out", "ec8.der",
        ],
    );
}

#[test]
fn plain_keys_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    assert!(
        std::str::from_utf8(&read(d, "ec1.pem"))
            .unwrap()
            .contains("EC PARAMETERS")
    );
    for (pem, der, format) in [
        ("rsa8.pem", "rsa8.der", Format::Pkcs8),
        ("rsa1.pem", "rsa1.der", Format::Pkcs1),
        ("ec1.pem", "ec1.der", Format::Sec1),
        ("ec8.pem", "ec8.der", Format::Pkcs8),
    ] {
        let key = parse(&read(d, pem)).unwrap();
        assert_eq!(key.encryption(), None, "{pem}");
        assert_same_key(d, pem, None, der, format);
        assert_eq!(
            decode(d, pem, Some(PASS)),
            Err(KeyError::NotEncrypted),
            "{pem}"
        );
    }
}

#[test]
fn encrypted_pkcs8_as_openssl_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    let pass = format!("pass:{}", std::str::from_utf8(PASS).unwrap());
    let topk8 = |out: &str, input: &str, extra: &[&str]| {
        let mut args = vec![
            "pkcs8", "-topk8", "-in", input, "-passout", &pass, "-out", out,
        ];
        args.extend_from_slice(extra);
        openssl(d, &args);
    };
    // aws-smtp-relay's and OpenSSL 3's defaults, then the other PBES2 variants.
    topk8("v2-aes256.pem", "rsa8.pem", &["-v2", "aes-256-cbc"]);
    topk8("default.pem", "rsa8.pem", &[]);
    topk8("v2-aes128.pem", "rsa8.pem", &["-v2", "aes-128-cbc"]);
    topk8("v2-des3.pem", "rsa8.pem", &["-v2", "des3"]);
    topk8(
        "v2-sha1.pem",
        "rsa8.pem",
        &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA1"],
    );
    topk8("scrypt.pem", "rsa8.pem", &["-scrypt"]);
    topk8("ec-aes256.pem", "ec8.pem", &["-v2", "aes-256-cbc"]);
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "ED25519",
            "-aes256",
            "-pass",
            &pass,
            "-out",
            "ed.pem",
        ],
    );
    openssl(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ed.pem", "-passin", &pass, "-outform", "DER",
            "-out", "ed.der",
        ],
    );
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "rsa8.pem",
            "-aes256",
            "-passout",
            &pass,
            "-out",
            "pkey-aes256.pem",
        ],
    );

    for (pem, der, scheme) in [
        (
            "v2-aes256.pem",
            "rsa8.der",
            "PBES2, PBKDF2-HmacWithSha256, AES-256-CBC",
        ),
        (
            "default.pem",
            "rsa8.der",
            "PBES2, PBKDF2-HmacWithSha256, AES-256-CBC",
        ),
        (
            "v2-aes128.pem",
            "rsa8.der",
            "PBES2, PBKDF2-HmacWithSha256, AES-128-CBC",
        ),
        (
            "v2-des3.pem",
            "rsa8.der",
            "PBES2, PBKDF2-HmacWithSha256, DES-EDE3-CBC",
        ),
        (
            "v2-sha1.pem",
            "rsa8.der",
            "PBES2, PBKDF2-HmacWithSha1, AES-256-CBC",
        ),
        ("scrypt.pem", "rsa8.der", "PBES2, scrypt, AES-256-CBC"),
        (
            "ec-aes256.pem",
            "ec8.der",
            "PBES2, PBKDF2-HmacWithSha256, AES-256-CBC",
        ),
        (
            "ed.pem",
            "ed.der",
            "PBES2, PBKDF2-HmacWithSha256, AES-256-CBC",
        ),
        (
            "pkey-aes256.pem",
            "rsa8.der",
            "PBES2, PBKDF2-HmacWithSha256, AES-256-CBC",
        ),
    ] {
        let text = read(d, pem);
        assert!(
            String::from_utf8_lossy(&text).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        );
        let key = parse(&text).unwrap();
        assert_eq!(
            key.encryption().unwrap(),
            format!("encrypted PKCS#8, {scheme}"),
            "{pem}"
        );
        assert_same_key(d, pem, Some(PASS), der, Format::Pkcs8);
        assert_eq!(
            decode(d, pem, Some(b"wrong")),
            Err(KeyError::WrongPassphrase),
            "{pem}"
        );
        assert_eq!(
            decode(d, pem, None),
            Err(KeyError::NeedsPassphrase(format!(
                "encrypted PKCS#8, {scheme}"
            ))),
            "{pem}"
        );
    }
}

#[test]
fn legacy_dek_info_as_openssl_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    let pass = format!("pass:{}", std::str::from_utf8(PASS).unwrap());
    for (tool, input, cipher, der, format) in [
        // `openssl rsa -aes256 -traditional` is what `genrsa -aes256` wrote before 3.0.
        ("rsa", "rsa8.pem", "aes256", "rsa1.der", Format::Pkcs1),
        ("rsa", "rsa8.pem", "aes192", "rsa1.der", Format::Pkcs1),
        ("rsa", "rsa8.pem", "aes128", "rsa1.der", Format::Pkcs1),
        ("rsa", "rsa8.pem", "des3", "rsa1.der", Format::Pkcs1),
        ("ec", "ec1.pem", "aes256", "ec1.der", Format::Sec1),
        ("ec", "ec1.pem", "des3", "ec1.der", Format::Sec1),
    ] {
        let out = format!("{tool}-{cipher}.pem");
        let flag = format!("-{cipher}");
        let mut args = vec![tool, "-in", input, &flag, "-passout", &pass, "-out", &out];
        if tool == "rsa" {
            args.push("-traditional");
        }
        openssl(d, &args);
        let text = String::from_utf8(read(d, &out)).unwrap();
        assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{out}: {text}");
        let name = match cipher {
            "aes256" => "AES-256-CBC",
            "aes192" => "AES-192-CBC",
            "aes128" => "AES-128-CBC",
            _ => "DES-EDE3-CBC",
        };
        assert!(
            text.contains(&format!("DEK-Info: {name},")),
            "{out}: {text}"
        );
        let key = parse(text.as_bytes()).unwrap();
        assert_eq!(
            key.encryption().unwrap(),
            format!("OpenSSL PEM encryption, DEK-Info {name}")
        );
        assert_same_key(d, &out, Some(PASS), der, format);
        assert_eq!(
            decode(d, &out, Some(b"wrong")),
            Err(KeyError::WrongPassphrase),
            "{out}"
        );
        assert!(matches!(
            decode(d, &out, None),
            Err(KeyError::NeedsPassphrase(_))
        ));
    }
}

#[test]
fn key_derivation_matches_openssl_enc() {
    // `openssl enc -P` prints the key EVP_BytesToKey derives: the same function PEM uses.
    let out = Command::new("openssl")
        .args([
            "enc",
            "-aes-256-cbc",
            "-md",
            "md5",
            "-S",
            "0102030405060708",
            "-pass",
            "pass:x y",
            "-P",
        ])
        .output()
        .expect("the openssl command is needed for the key tests");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let key_hex = text
        .lines()
        .find_map(|l| l.strip_prefix("key="))
        .expect("key= line")
        .trim();
    let ours = bytes_to_key(b"x y", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
    assert_eq!(hex(key_hex).unwrap(), ours.to_vec());
}

#[test]
fn what_is_refused_and_how() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    let pass = format!("pass:{}", std::str::from_utf8(PASS).unwrap());
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-key",
            "rsa8.pem",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-out",
            "cert.pem",
        ],
    );

    let e = parse(&read(d, "cert.pem")).err().unwrap();
    assert_eq!(
        e.to_string(),
        "no PEM private key found (expected BEGIN PRIVATE KEY, ENCRYPTED PRIVATE KEY, \
         RSA PRIVATE KEY or EC PRIVATE KEY; found CERTIFICATE)"
    );
    // Certificate and key in one file is fine; two keys are not.
    let mut both = read(d, "cert.pem");
    both.extend(read(d, "rsa8.pem"));
    assert!(parse(&both).is_ok());
    both.extend(read(d, "ec8.pem"));
    assert_eq!(parse(&both).err(), Some(KeyError::SeveralKeys(2)));

    openssl(
        d,
        &[
            "rsa",
            "-in",
            "rsa8.pem",
            "-aes256",
            "-traditional",
            "-passout",
            &pass,
            "-out",
            "legacy.pem",
        ],
    );
    let legacy = String::from_utf8(read(d, "legacy.pem")).unwrap();
    let bf = legacy.replace("DEK-Info: AES-256-CBC,", "DEK-Info: BF-CBC,");
    let e = parse(bf.as_bytes()).err().unwrap();
    assert!(matches!(e, KeyError::Unsupported(_)), "{e}");
    assert!(
        e.to_string()
            .contains("DEK-Info cipher BF-CBC is not supported"),
        "{e}"
    );
    let short_iv = legacy.replace("DEK-Info: AES-256-CBC,", "DEK-Info: AES-256-CBC,00");
    let e = parse(short_iv.as_bytes()).err().unwrap();
    assert!(
        e.to_string()
            .contains("expected 32 hex digits for AES-256-CBC"),
        "{e}"
    );
    let no_dek: String = legacy
        .lines()
        .filter(|l| !l.starts_with("DEK-Info"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = parse(no_dek.as_bytes()).err().unwrap();
    assert!(
        e.to_string()
            .contains("Proc-Type: 4,ENCRYPTED without DEK-Info"),
        "{e}"
    );

    // A flipped byte in the ciphertext's last block: bad padding, told as such.
    let key = parse(legacy.as_bytes()).unwrap();
    let PemKey {
        format,
        protection,
        mut der,
    } = key;
    let n = der.len();
    der[n - 1] ^= 0x55;
    let damaged = PemKey {
        format,
        protection,
        der,
    };
    assert_eq!(
        damaged.into_der(Some(PASS)).err(),
        Some(KeyError::WrongPassphrase)
    );

    // PKCS#12 PBE, OpenSSL 1.0's `pkcs8 -topk8` default: refused with the way out.
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-v1",
            "PBE-SHA1-3DES",
            "-in",
            "rsa8.pem",
            "-passout",
            &pass,
            "-out",
            "p12.pem",
        ],
    );
    let e = parse(&read(d, "p12.pem")).err().unwrap();
    assert!(
        e.to_string()
            .contains("re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"),
        "{e}"
    );

    let dsa = b"-----BEGIN DSA PRIVATE KEY-----\nMAA=\n-----END DSA PRIVATE KEY-----\n";
    let e = parse(dsa).err().unwrap();
    assert!(
        e.to_string()
            .starts_with("BEGIN DSA PRIVATE KEY: not a key type"),
        "{e}"
    );
    assert!(matches!(parse(b"").err(), Some(KeyError::NoKey { found }) if found.is_empty()));
}
