//! The text form of a fault, as `astrid fault TARGET FAULT` and chaos plans write it.

use astrid::protocol::Fault;

use crate::CliError;

/// Parses `panic`, `stop`, `trap` or `hang:<duration>`.
pub(crate) fn parse_fault(text: &str) -> Result<Fault, CliError> {
    match text {
        "panic" => Ok(Fault::Panic),
        "stop" => Ok(Fault::Stop),
        "trap" => Ok(Fault::Trap),
        _ => text
            .strip_prefix("hang:")
            .and_then(|d| humantime::parse_duration(d).ok())
            .map(|d| Fault::Hang {
                millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            })
            .ok_or_else(|| CliError::BadFault(text.to_owned())),
    }
}
