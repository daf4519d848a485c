//! Durability and the on-disk queue.

pub mod commit;
