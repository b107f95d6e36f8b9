//! Link layers: strip the link header and return the IP packet (stub, being written).
use super::DecodeError;
pub fn strip(linktype: u32, _frame: &[u8]) -> Result<&[u8], DecodeError> {
    Err(DecodeError::UnsupportedLinkType(linktype))
}
