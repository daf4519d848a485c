//! What one SendEmail says: the envelope, the message's `X-SES-*` wishes over the config's
//! defaults, and the raw message. Built without I/O, so the choices are testable alone.

use super::config::SesSettings;
use super::headers::SesHeaders;
use aws_sdk_sesv2::operation::send_email::builders::SendEmailFluentBuilder;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, MessageTag, RawMessage};

/// SES takes at most this many destinations per message.
pub const MAX_RECIPIENTS_PER_SEND: usize = 50;

/// The parameters every send of one delivery shares (only the recipients differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The envelope sender; `None` for the null sender `<>`: SES then takes the address in
    /// the message's `From:` header (which must be a verified identity), as SendRawEmail
    /// does without `Source`.
    pub from: Option<String>,
    pub from_arn: Option<String>,
    pub return_path_arn: Option<String>,
    pub configuration_set: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Request {
    /// A message's header fields set their parameter for that message, as with SES's SMTP
    /// interface; the config gives the default. Tags are the config's plus the message's,
    /// the message's value winning for a name in both. For the sender authorisation,
    /// `X-SES-SOURCE-ARN` (SES v1's name for the envelope sender's) comes before
    /// `X-SES-FROM-ARN`: SES v2 has one field for both.
    pub fn new(settings: &SesSettings, h: &SesHeaders, mail_from: &str) -> Request {
        let mut tags = settings.tags.clone();
        for (name, value) in &h.tags {
            match tags.iter_mut().find(|(n, _)| n == name) {
                Some(t) => t.1 = value.clone(),
                None => tags.push((name.clone(), value.clone())),
            }
        }
        Request {
            from: (!mail_from.is_empty()).then(|| mail_from.to_string()),
            from_arn: h
                .source_arn
                .clone()
                .or_else(|| h.from_arn.clone())
                .or_else(|| settings.from_arn.clone()),
            return_path_arn: h
                .return_path_arn
                .clone()
                .or_else(|| settings.return_path_arn.clone()),
            configuration_set: h
                .configuration_set
                .clone()
                .or_else(|| settings.configuration_set.clone()),
            tags,
        }
    }

    /// The SendEmail call for `rcpts` (at most [`MAX_RECIPIENTS_PER_SEND`]) with `raw`.
    /// Recipients are the envelope's only, never the message's headers.
    pub fn apply(
        &self,
        op: SendEmailFluentBuilder,
        rcpts: &[String],
        raw: Vec<u8>,
    ) -> Result<SendEmailFluentBuilder, String> {
        let raw = RawMessage::builder()
            .data(Blob::new(raw))
            .build()
            .map_err(|e| e.to_string())?;
        let mut op = op
            .set_from_email_address(self.from.clone())
            .set_from_email_address_identity_arn(self.from_arn.clone())
            .set_feedback_forwarding_email_address_identity_arn(self.return_path_arn.clone())
            .set_configuration_set_name(self.configuration_set.clone())
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(rcpts.to_vec()))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build());
        for (name, value) in &self.tags {
            let tag = MessageTag::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(|e| e.to_string())?;
            op = op.email_tags(tag);
        }
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::ses::config::SesConfig;
    use aws_sdk_sesv2::config::{BehaviorVersion, Region};

    fn settings(toml: &str) -> SesSettings {
        let c: SesConfig = toml::from_str(toml).unwrap();
        c.check(std::path::Path::new("/")).unwrap()
    }

    const ARN_A: &str = "arn:aws:ses:eu-west-1:1:identity/a.example";

    #[test]
    fn the_config_is_the_default() {
        let s = settings(&format!(
            "configuration_set = \"cs\"\ntags = {{ team = \"mail\" }}\nfrom_arn = \"{ARN_A}\"\n\
             return_path_arn = \"{ARN_A}\"\n"
        ));
        let r = Request::new(&s, &SesHeaders::default(), "alice@a.example");
        assert_eq!(
            r,
            Request {
                from: Some("alice@a.example".into()),
                from_arn: Some(ARN_A.into()),
                return_path_arn: Some(ARN_A.into()),
                configuration_set: Some("cs".into()),
                tags: vec![("team".into(), "mail".into())],
            }
        );
    }

    #[test]
    fn the_message_headers_win_for_that_message() {
        let s = settings(&format!(
            "configuration_set = \"cs\"\ntags = {{ team = \"mail\", env = \"prod\" }}\n\
             from_arn = \"{ARN_A}\"\n"
        ));
        let h = SesHeaders {
            configuration_set: Some("other".into()),
            tags: vec![("env".into(), "test".into()), ("run".into(), "7".into())],
            source_arn: None,
            from_arn: Some("arn:aws:ses:eu-west-1:1:identity/from".into()),
            return_path_arn: Some("arn:aws:ses:eu-west-1:1:identity/rp".into()),
        };
        let r = Request::new(&s, &h, "");
        assert_eq!(r.from, None, "the null sender: SES takes the From: header");
        assert_eq!(r.configuration_set.as_deref(), Some("other"));
        assert_eq!(
            r.tags,
            vec![
                ("env".into(), "test".into()),
                ("team".into(), "mail".into()),
                ("run".into(), "7".into())
            ]
        );
        assert_eq!(
            r.from_arn.as_deref(),
            Some("arn:aws:ses:eu-west-1:1:identity/from")
        );
        let with_source = SesHeaders {
            source_arn: Some("arn:aws:ses:eu-west-1:1:identity/source".into()),
            ..h.clone()
        };
        assert_eq!(
            Request::new(&s, &with_source, "x@y").from_arn.as_deref(),
            Some("arn:aws:ses:eu-west-1:1:identity/source")
        );
    }

    /// What the SDK request carries (moto records neither configuration set nor tags, so
    /// this is where they are checked).
    #[test]
    fn the_sdk_request_carries_every_parameter() {
        let conf = aws_sdk_sesv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .build();
        let client = aws_sdk_sesv2::Client::from_conf(conf);
        let r = Request {
            from: Some("alice@a.example".into()),
            from_arn: Some(ARN_A.into()),
            return_path_arn: Some("arn:aws:ses:eu-west-1:1:identity/rp".into()),
            configuration_set: Some("cs".into()),
            tags: vec![("team".into(), "mail".into())],
        };
        let rcpts = vec!["b@x.example".to_string(), "c@y.example".to_string()];
        let op = r
            .apply(
                client.send_email(),
                &rcpts,
                b"Subject: x\r\n\r\nhi\r\n".to_vec(),
            )
            .unwrap();
        let i = op.as_input();
        assert_eq!(
            i.get_from_email_address().as_deref(),
            Some("alice@a.example")
        );
        assert_eq!(
            i.get_from_email_address_identity_arn().as_deref(),
            Some(ARN_A)
        );
        assert_eq!(
            i.get_feedback_forwarding_email_address_identity_arn()
                .as_deref(),
            Some("arn:aws:ses:eu-west-1:1:identity/rp")
        );
        assert_eq!(i.get_configuration_set_name().as_deref(), Some("cs"));
        let tags = i.get_email_tags().as_ref().unwrap();
        assert_eq!((tags[0].name(), tags[0].value()), ("team", "mail"));
        let dest = i.get_destination().as_ref().unwrap();
        assert_eq!(dest.to_addresses(), rcpts.as_slice());
        assert!(dest.cc_addresses().is_empty() && dest.bcc_addresses().is_empty());
        let raw = i.get_content().as_ref().unwrap().raw().unwrap();
        assert_eq!(raw.data().as_ref(), b"Subject: x\r\n\r\nhi\r\n");
    }
}
