//! One reading of `GetMetrics`: the samples of the OpenMetrics text, by metric name and
//! labels. Only what `astrid top` reads is kept: the sample lines (`name{labels} value`);
//! the daemon writes them with `prometheus-client`'s encoder, so names, label escapes and
//! numbers follow the OpenMetrics text format.

use std::collections::BTreeMap;

/// A sample's labels, sorted by name.
pub(crate) type Labels = BTreeMap<String, String>;

/// Every sample of one reading.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sample {
    series: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Sample {
    /// Reads the OpenMetrics text (lines that do not parse are skipped).
    pub(crate) fn parse(text: &str) -> Self {
        let mut sample = Self::default();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some((name, labels, value)) = parse_line(line) {
                sample.series.entry(name).or_default().push((labels, value));
            }
        }
        sample
    }

    /// The samples of metric `name` whose labels include every pair of `with`.
    pub(crate) fn select<'a>(
        &'a self,
        name: &str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |(labels, _)| {
                with.iter()
                    .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
            })
            .map(|(labels, value)| (labels, *value))
    }

    /// The sum of the samples [`select`](Self::select) gives.
    pub(crate) fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.select(name, with).map(|(_, v)| v).sum()
    }

    /// The cumulative buckets `(le, count)` of histogram `name` (its `_bucket` samples)
    /// with labels `with`, by bound.
    pub(crate) fn buckets(&self, name: &str, with: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .select(&bucket, with)
            .filter_map(|(labels, count)| {
                let le = labels.get("le")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// The distinct values of label `label` among the samples of `name`.
    pub(crate) fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .select(name, &[])
            .filter_map(|(labels, _)| labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// `name{k="v",...} value [timestamp]`, or `name value`.
fn parse_line(line: &str) -> Option<(String, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The labels up to the closing `}`, and what follows it.
fn parse_labels(mut text: &str) -> Option<(Labels, &str)> {
    let mut labels = Labels::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        text = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels() {
        let text = "# TYPE astrid_requests counter\n\
            astrid_requests_total{kind=\"Ping\",outcome=\"ok\"} 3\n\
            astrid_requests_total{kind=\"a\\\"b\",outcome=\"ok\"} 1\n\
            astrid_uptime_seconds 2.5\n\
            x_bucket{le=\"+Inf\"} 4\n\
            x_bucket{le=\"0.5\"} 1\n\
            # EOF\n";
        let s = Sample::parse(text);
        assert!((s.sum("astrid_requests_total", &[("kind", "Ping")]) - 3.0).abs() < f64::EPSILON);
        assert!((s.sum("astrid_requests_total", &[]) - 4.0).abs() < f64::EPSILON);
        assert_eq!(
            s.label_values("astrid_requests_total", "kind"),
            ["Ping", "a\"b"]
        );
        assert!((s.sum("astrid_uptime_seconds", &[]) - 2.5).abs() < f64::EPSILON);
        let buckets = s.buckets("x", &[]);
        assert_eq!(buckets[0], (0.5, 1.0));
        assert!(buckets[1].0.is_infinite());
    }
}
