//! The text form of a fault, as `astrid fault TARGET FAULT` and chaos plans write it (the
//! grammar is the protocol crate's: see `astrid::protocol::Fault`'s `FromStr`).

use astrid::protocol::Fault;

use crate::CliError;

/// Parses a fault's text form, e.g. `trap`, `hang:2s` or `import:kv_put,fail=-5`.
pub(crate) fn parse_fault(text: &str) -> Result<Fault, CliError> {
    text.parse().map_err(CliError::BadFault)
}
