//! Sans-I/O protocol code: bytes in, replies and events out.
