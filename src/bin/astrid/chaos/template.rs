//! Text with placeholders, as plans write commands, keys and checks: `{n}` (the request's
//! number within its workload entry, from 1, unique across the entry's clients), `{client}`
//! (the client's number within the entry, from 0), and, in whole-run checks, `{acked}` and
//! `{sent}` (the entry's acknowledged and sent requests). `{{` and `}}` stand for braces.

use std::fmt;

/// A placeholder a template may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholder {
    N,
    Client,
    Acked,
    Sent,
}

impl Placeholder {
    fn name(self) -> &'static str {
        match self {
            Self::N => "n",
            Self::Client => "client",
            Self::Acked => "acked",
            Self::Sent => "sent",
        }
    }

    const ALL: [Self; 4] = [Self::N, Self::Client, Self::Acked, Self::Sent];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Hole(Placeholder),
}

/// Parsed template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template(Vec<Part>);

/// The values placeholders stand for (those a template may not hold are never read).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Values {
    pub(crate) n: u64,
    pub(crate) client: u32,
    pub(crate) acked: u64,
    pub(crate) sent: u64,
}

impl Template {
    /// Parses `text`, allowing only the placeholders in `allowed`.
    pub(crate) fn parse(text: &str, allowed: &[Placeholder]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
                literal.push_str(&tail[..1]);
                rest = after;
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "a lone `}}` in `{text}` (write `}}}}` for a brace)"
                ));
            }
            let Some(close) = tail.find('}') else {
                return Err(format!("an unclosed `{{` in `{text}`"));
            };
            let name = &tail[1..close];
            let hole = Placeholder::ALL
                .into_iter()
                .find(|p| p.name() == name && allowed.contains(p))
                .ok_or_else(|| {
                    let names: Vec<String> = allowed
                        .iter()
                        .map(|p| format!("{{{}}}", p.name()))
                        .collect();
                    format!(
                        "unknown placeholder `{{{name}}}` here: use {} (or `{{{{` for a brace)",
                        names.join(", ")
                    )
                })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Hole(hole));
            rest = &tail[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self(parts))
    }

    /// The text with the placeholders filled in.
    pub(crate) fn render(&self, values: Values) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Hole(Placeholder::N) => out.push_str(&values.n.to_string()),
                Part::Hole(Placeholder::Client) => out.push_str(&values.client.to_string()),
                Part::Hole(Placeholder::Acked) => out.push_str(&values.acked.to_string()),
                Part::Hole(Placeholder::Sent) => out.push_str(&values.sent.to_string()),
            }
        }
        out
    }
}

/// The template as written (braces escaped again).
impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                Part::Text(text) => f.write_str(&text.replace('{', "{{").replace('}', "}}"))?,
                Part::Hole(p) => write!(f, "{{{}}}", p.name())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[Placeholder] = &[Placeholder::N, Placeholder::Client];

    #[test]
    fn placeholders_are_filled_in() {
        let t = Template::parse("note {client}-{n} {{x}}", REQUEST).unwrap();
        let values = Values {
            n: 12,
            client: 3,
            ..Values::default()
        };
        assert_eq!(t.render(values), "note 3-12 {x}");
        assert_eq!(t.to_string(), "note {client}-{n} {{x}}");
        assert_eq!(
            Template::parse("plain", REQUEST).unwrap().render(values),
            "plain"
        );
    }

    #[test]
    fn unknown_or_unbalanced_placeholders_are_refused() {
        let err = Template::parse("{acked}", REQUEST).unwrap_err();
        assert!(err.contains("unknown placeholder `{acked}`"), "{err}");
        assert!(err.contains("{n}, {client}"), "{err}");
        assert!(
            Template::parse("{n", REQUEST)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("n}", REQUEST).unwrap_err().contains("lone"));
    }
}
