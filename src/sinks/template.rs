//! Path templates: `{rcpt}`, `{local}`, `{domain}`.
