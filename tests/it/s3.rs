//! The `s3` sink against s3s-fs (a real S3 server: SigV4 checked, objects as files),
//! read back with boto3.

use crate::harness::{
    Mailchute, MotoServer, RawSmtp, assert_stored, dot_stuff, free_port, message, python_ok, swaks,
    swaks_data, sync_config, terminate,
};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIAMAILCHUTETEST";
pub const SECRET_KEY: &str = "mailchute-test-secret";
pub const BUCKET: &str = "mail";

/// Where scripts/test installs s3s-fs (`MAILCHUTE_TEST_S3S_FS` overrides; else PATH).
fn s3s_fs_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MAILCHUTE_TEST_S3S_FS") {
        return PathBuf::from(p);
    }
    let cached = Path::new("/var/cache/mailchute-ci/s3s-fs/bin/s3s-fs");
    if cached.exists() {
        return cached.to_path_buf();
    }
    PathBuf::from("s3s-fs")
}

/// A private s3s-fs on a free port, its objects under a temp dir.
pub struct S3Server {
    child: Child,
    port: u16,
    /// Keeps the objects' directory (and the bucket in it) for the server's life.
    data: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(data.path().join(BUCKET)).expect("bucket dir");
        let port = free_port();
        let child = Self::spawn(port, data.path());
        S3Server { child, port, data }
    }

    /// Stops the server; the objects stay for [`S3Server::restart`].
    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }

    /// Starts it again on the same port and objects.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, self.data.path());
    }

    /// Runs s3s-fs on `port` over `data` and waits until it listens.
    fn spawn(port: u16, data: &Path) -> Child {
        let child = Command::new(s3s_fs_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): scripts/test installs it",
                    s3s_fs_bin().display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs not listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every object in the bucket, read back by boto3.
    pub fn objects(&self) -> Vec<StoredObject> {
        let out = python_ok(
            READ_OBJECTS,
            &[&self.endpoint(), BUCKET, ACCESS_KEY, SECRET_KEY],
        );
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("boto3 JSON");
        v.into_iter()
            .map(|o| {
                use base64::Engine as _;
                StoredObject {
                    key: o["key"].as_str().unwrap().to_string(),
                    etag: o["etag"].as_str().unwrap().to_string(),
                    content_type: o["content_type"].as_str().unwrap_or("").to_string(),
                    metadata: o["metadata"].clone(),
                    body: base64::engine::general_purpose::STANDARD
                        .decode(o["body"].as_str().unwrap())
                        .unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

pub struct StoredObject {
    pub key: String,
    pub etag: String,
    pub content_type: String,
    pub metadata: serde_json::Value,
    pub body: Vec<u8>,
}

const READ_OBJECTS: &str = r#"
import base64, json, sys
import boto3
from botocore.config import Config
endpoint, bucket, ak, sk = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                  aws_secret_access_key=sk, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
out = []
for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
    r = s3.get_object(Bucket=bucket, Key=o["Key"])
    out.append({"key": o["Key"], "etag": r["ETag"].strip('"'),
                "content_type": r.get("ContentType", ""), "metadata": r["Metadata"],
                "body": base64.b64encode(r["Body"].read()).decode()})
print(json.dumps(out))
"#;

/// A mailchute in its own directory (dropped before the directory).
struct Setup {
    m: Mailchute,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A sync SMTP listener whose one route goes to an s3 sink on `server` with `key`; the
/// credentials come from a shared-credentials file with `secret`.
fn start_mailchute(server: &S3Server, key: &str, secret: &str) -> Setup {
    let port = free_port();
    let sink = format!(
        "type = \"s3\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
         force_path_style = true\nkey = \"{key}\"\ncredentials_file = \"./aws-credentials\"\n\
         profile = \"mail\"\ntimeout = \"20s\"\n",
        server.endpoint()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("aws-credentials"),
        format!("[mail]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret}\n"),
    )
    .expect("write credentials");
    Setup {
        m: Mailchute::start_in(dir.path(), &sync_config(port, "", &sink)),
        port,
        _dir: dir,
    }
}

#[test]
fn s3_one_object_per_recipient_with_its_envelope() {
    let s3 = S3Server::start();
    let Setup { m, port, _dir } =
        start_mailchute(&s3, "{domain}/{local}/{date:%Y}/{id}.eml", SECRET_KEY);
    let msg = message("s3-rcpt", "Hello, bucket.\r\n");
    let data = swaks_data(m.dir(), "msg.eml", &msg);
    let out = swaks(&[
        "--server",
        &format!("127.0.0.1:{port}"),
        "--from",
        "sender@client.test",
        "--to",
        "alice@one.test,bob@two.test",
        "--data",
        &data,
    ]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}\n{}", m.log());

    let objects = s3.objects();
    assert_eq!(
        objects.len(),
        2,
        "{:?}",
        objects.iter().map(|o| &o.key).collect::<Vec<_>>()
    );
    let year = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .year()
        .to_string();
    for (o, rcpt) in objects.iter().zip(["alice@one.test", "bob@two.test"]) {
        let (local, domain) = rcpt.split_once('@').unwrap();
        assert!(
            o.key.starts_with(&format!("{domain}/{local}/{year}/")) && o.key.ends_with(".eml"),
            "{}",
            o.key
        );
        assert_eq!(o.content_type, "message/rfc822");
        assert_stored(&o.body, &msg);
        let meta = &o.metadata;
        assert_eq!(meta["mailchute-sender"], "sender@client.test");
        assert_eq!(
            meta["mailchute-recipients"], rcpt,
            "one recipient per object"
        );
        assert!(
            meta["mailchute-client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{meta}"
        );
        let sha = meta["mailchute-sha256"].as_str().unwrap();
        assert_eq!(sha.len(), 64, "{meta}");
        assert!(
            meta["mailchute-id"]
                .as_str()
                .is_some_and(|id| id.len() == 24),
            "{meta}"
        );
    }
}

#[test]
fn s3_the_same_key_again_makes_no_second_object() {
    // {sha256} is the same for the same bytes from the client, so the second delivery
    // finds the first object (412 on If-None-Match: *) and is delivered without a write.
    let s3 = S3Server::start();
    let Setup { m, port, _dir } = start_mailchute(&s3, "{sha256}.eml", SECRET_KEY);
    let msg = message("s3-again", "Twice.\r\n");
    let mut replies = Vec::new();
    for _ in 0..2 {
        let mut c = RawSmtp::connect(port);
        c.ehlo("client.test");
        let r = c.data_raw("sender@client.test", &["alice@one.test"], &dot_stuff(&msg));
        assert_eq!(r.code, 250, "{}\n{}", r.text(), m.log());
        replies.push(r.text());
        c.quit();
    }
    let objects = s3.objects();
    assert_eq!(objects.len(), 1);
    assert_stored(&objects[0].body, &msg);
    // The object is the first transaction's, untouched by the second.
    let id = objects[0].metadata["mailchute-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(replies[0].contains(&id), "{id} not in {replies:?}");
    assert!(!replies[1].contains(&id), "{id} in {replies:?}");
}

#[test]
fn s3_a_wrong_secret_is_a_451_naming_bucket_and_key() {
    let s3 = S3Server::start();
    let Setup { m, port, _dir } = start_mailchute(&s3, "in/{id}.eml", "not-the-secret");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "sender@client.test",
        &["alice@one.test"],
        &dot_stuff(&message("s3-denied", "No.\r\n")),
    );
    let text = r.text();
    assert_eq!(r.code, 451, "{text}\n{}", m.log());
    assert!(text.contains("451 4.7.0"), "{text}");
    assert!(
        text.contains(&format!("PutObject s3://{BUCKET}/in/")),
        "{text}"
    );
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    c.quit();
    assert!(s3.objects().is_empty());
}

#[test]
fn s3_a_big_message_goes_up_by_multipart() {
    let s3 = S3Server::start();
    let Setup { m, port, _dir } = start_mailchute(&s3, "big/{id}.eml", SECRET_KEY);
    // 20 MB of 76-character lines: three 8 MiB parts.
    let line = format!("{}\r\n", "x".repeat(76));
    let body = line.repeat(20 * 1024 * 1024 / line.len());
    let msg = message("s3-big", &body);
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("sender@client.test", &["alice@one.test"], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{}\n{}", r.text(), m.log());
    c.quit();
    let objects = s3.objects();
    assert_eq!(objects.len(), 1);
    assert!(
        objects[0].etag.ends_with("-3"),
        "multipart ETag: {}",
        objects[0].etag
    );
    assert_stored(&objects[0].body, &msg);
}

#[test]
fn s3_an_envelope_too_big_for_metadata_goes_to_a_sidecar() {
    let s3 = S3Server::start();
    let Setup { m, port, _dir } = start_mailchute(&s3, "unit/{id}.eml", SECRET_KEY);
    let rcpts: Vec<String> = (0..100).map(|i| format!("reader{i}@list.test")).collect();
    let rcpt_refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let msg = message("s3-sidecar", "Many readers.\r\n");
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw("sender@client.test", &rcpt_refs, &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{}\n{}", r.text(), m.log());
    c.quit();
    let objects = s3.objects();
    assert_eq!(objects.len(), 2, "the message and its sidecar");
    let (eml, json) = (&objects[0], &objects[1]);
    assert_eq!(json.key, format!("{}.envelope.json", eml.key));
    assert_stored(&eml.body, &msg);
    assert_eq!(eml.metadata["mailchute-envelope"], "sidecar");
    assert!(eml.metadata.get("mailchute-recipients").is_none());
    let envelope: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(envelope["recipients"].as_array().unwrap().len(), 100);
    assert_eq!(envelope["sender"], "sender@client.test");
    assert_eq!(envelope["sha256"], eml.metadata["mailchute-sha256"]);
}

/// The sink driven directly: a retry of the same delivery unit finds the object the first
/// attempt stored, and the health check is HeadBucket (a missing bucket and an endpoint
/// nobody listens on are temporary failures).
#[test]
fn s3_a_retry_of_the_same_unit_and_the_health_check() {
    use mailchute::envelope::{Body, ClientInfo, Envelope};
    use mailchute::sinks::Sink as _;
    use mailchute::sinks::s3::S3Sink;
    use mailchute::sinks::s3::config::S3Config;

    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let sink_at = |endpoint: &str, bucket: &str| {
        let c: S3Config = toml::from_str(&format!(
            "bucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
             force_path_style = true\nkey = \"u/{{id}}.eml\"\ncredentials_file = \"{}\"\n",
            endpoint,
            creds.display()
        ))
        .unwrap();
        S3Sink::new(c.check(dir.path()).unwrap())
    };
    let sink_for = |bucket: &str| sink_at(&s3.endpoint(), bucket);
    let msg_path = dir.path().join("msg.eml");
    std::fs::write(&msg_path, message("s3-unit", "Once.\r\n")).unwrap();
    let envelope = Envelope {
        id: "0000000000000000000000AA".into(),
        mail_from: "sender@client.test".into(),
        rcpts: vec!["alice@one.test".into()],
        client: ClientInfo::default(),
        listener: "test".into(),
        received_at: 1_763_805_600,
        body: Body::SevenBit,
        smtputf8: false,
        size: 0,
        sha256: String::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = sink_for(BUCKET);
        sink.healthcheck()
            .await
            .expect("HeadBucket of an existing bucket");
        for first_attempt in [true, false] {
            let d = mailchute::sinks::Delivery {
                id: "0000000000000000000000AA.0",
                envelope: &envelope,
                rcpts: &envelope.rcpts,
                message: &msg_path,
                first_attempt,
            };
            let results = sink.deliver(&d).await;
            let detail = &results[0].as_ref().expect("delivered").detail;
            let want = if first_attempt {
                "bytes)"
            } else {
                "already stored by an earlier attempt"
            };
            assert!(detail.ends_with(want), "{detail}");
        }
        let e = sink_for("no-such-bucket").healthcheck().await.unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.status, "4.2.0", "{e}");
        assert!(e.message.contains("HeadBucket s3://no-such-bucket"), "{e}");
        // Nobody listening: a network failure, temporary.
        let closed = format!("http://127.0.0.1:{}", crate::harness::closed_port());
        let e = sink_at(&closed, BUCKET).healthcheck().await.unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.status, "4.4.1", "{e}");
    });
    let objects = s3.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].key, "u/0000000000000000000000AA.0.eml");
}

/// Creates a KMS key and the bucket; prints the key's ARN.
const MOTO_SETUP: &str = r#"
import sys
import boto3
endpoint, bucket = sys.argv[1:3]
kw = dict(endpoint_url=endpoint, aws_access_key_id="testing",
          aws_secret_access_key="testing", region_name="us-east-1")
key = boto3.client("kms", **kw).create_key(Description="mailchute test")["KeyMetadata"]
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
print(key["Arn"])
"#;

/// Every object's key, `ServerSideEncryption` and `SSEKMSKeyId` from HeadObject.
const MOTO_HEAD_OBJECTS: &str = r#"
import json, sys
import boto3
from botocore.config import Config
endpoint, bucket = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
out = []
for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
    h = s3.head_object(Bucket=bucket, Key=o["Key"])
    out.append({"key": o["Key"], "sse": h.get("ServerSideEncryption"),
                "kms_key_id": h.get("SSEKMSKeyId"), "content_type": h.get("ContentType")})
print(json.dumps(out))
"#;

#[test]
fn s3_sse_kms_on_moto_reports_aws_kms_and_the_key() {
    let moto = MotoServer::start();
    let key_arn = String::from_utf8(python_ok(MOTO_SETUP, &[&moto.endpoint(), BUCKET]))
        .unwrap()
        .trim()
        .to_string();
    assert!(key_arn.starts_with("arn:aws:kms:"), "{key_arn}");

    let port = free_port();
    let sink = format!(
        "type = \"s3\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
         force_path_style = true\nkey = \"kms/{{id}}.eml\"\nsse = \"aws:kms\"\n\
         kms_key_id = \"{key_arn}\"\ncredentials_file = \"./aws-credentials\"\n\
         timeout = \"20s\"\n",
        moto.endpoint()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("aws-credentials"),
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("write credentials");
    let m = Mailchute::start_in(dir.path(), &sync_config(port, "", &sink));
    // Two messages, two objects: moto 5.2.5 honours If-None-Match: * (412 on an existing
    // key, for PutObject and CompleteMultipartUpload alike), so the writes stay conditional.
    for subject in ["s3-kms-1", "s3-kms-2"] {
        let mut c = RawSmtp::connect(port);
        c.ehlo("client.test");
        let r = c.data_raw(
            "sender@client.test",
            &["alice@one.test"],
            &dot_stuff(&message(subject, "Encrypted at rest.\r\n")),
        );
        assert_eq!(r.code, 250, "{}\n{}", r.text(), m.log());
        c.quit();
    }

    let out = python_ok(MOTO_HEAD_OBJECTS, &[&moto.endpoint(), BUCKET]);
    let objects: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("boto3 JSON");
    assert_eq!(objects.len(), 2, "{objects:?}");
    for o in &objects {
        assert!(o["key"].as_str().unwrap().starts_with("kms/"), "{o}");
        assert_eq!(o["sse"], "aws:kms", "{o}");
        assert_eq!(o["kms_key_id"], key_arn.as_str(), "{o}");
        assert_eq!(o["content_type"], "message/rfc822", "{o}");
    }
    drop(m);
}

/// moto's record of the roles assumed through its STS, and the keys in the bucket.
const MOTO_ROLES_AND_KEYS: &str = r#"
import json, sys, urllib.request
import boto3
from botocore.config import Config
endpoint, bucket = sys.argv[1:3]
data = json.load(urllib.request.urlopen(endpoint + "/moto-api/data.json"))
roles = [{"role_arn": r["role_arn"], "session_name": r["session_name"]}
         for r in data.get("sts", {}).get("AssumedRole", [])]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
print(json.dumps({"roles": roles, "keys": keys}))
"#;

#[test]
fn s3_role_arn_is_assumed_through_sts_before_the_put() {
    let moto = MotoServer::start();
    python_ok(MOTO_SETUP, &[&moto.endpoint(), BUCKET]);
    let role = "arn:aws:iam::123456789012:role/mailchute-writer";
    let port = free_port();
    // The same endpoint serves STS (as MinIO's does): moto answers both.
    let sink = format!(
        "type = \"s3\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
         force_path_style = true\nkey = \"role/{{id}}.eml\"\n\
         credentials_file = \"./aws-credentials\"\nrole_arn = \"{role}\"\ntimeout = \"20s\"\n",
        moto.endpoint()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("aws-credentials"),
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("write credentials");
    let m = Mailchute::start_in(dir.path(), &sync_config(port, "", &sink));
    let mut c = RawSmtp::connect(port);
    c.ehlo("client.test");
    let r = c.data_raw(
        "sender@client.test",
        &["alice@one.test"],
        &dot_stuff(&message("s3-role", "Written with the role's keys.\r\n")),
    );
    assert_eq!(r.code, 250, "{}\n{}", r.text(), m.log());
    c.quit();

    let out = python_ok(MOTO_ROLES_AND_KEYS, &[&moto.endpoint(), BUCKET]);
    let seen: serde_json::Value = serde_json::from_slice(&out).expect("moto JSON");
    let roles = seen["roles"].as_array().expect("roles");
    assert!(
        roles
            .iter()
            .any(|r| r["role_arn"] == role && r["session_name"] == "mailchute"),
        "{seen}"
    );
    let keys = seen["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{seen}");
    assert!(
        keys[0].as_str().unwrap_or("").starts_with("role/"),
        "{seen}"
    );
    drop(m);
}
