//! IPv4/IPv6 and tunnels (stub, being written).
use super::{DecodeError, Packet};
pub fn decode_ip(_ip: &[u8], _depth: u8) -> Result<Packet<'_>, DecodeError> {
    Err(DecodeError::NotIp)
}
