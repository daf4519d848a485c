//! SMTP/LMTP listeners: sockets, TLS, PROXY headers; the protocol lives in `proto`.
