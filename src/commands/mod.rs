//! The non-daemon commands. Each returns data; printing belongs to `main`.

pub mod check;
pub mod load;
pub mod replay;
pub mod reset;
pub mod status;
pub mod verify;
