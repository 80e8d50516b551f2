//! What `astrid top` computes from two successive readings: rates of counters, and
//! percentiles of the observations made between them, from the histograms' bucket deltas
//! (interpolated linearly inside the bucket, as Prometheus' `histogram_quantile` does).

/// Per second, between `before` and `now` taken `seconds` apart; a counter that went down
/// (the daemon restarted, or the counter was reset) counts from zero.
pub(crate) fn rate(before: f64, now: f64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    let delta = if now >= before { now - before } else { now };
    delta / seconds
}

/// The observations made between two readings of a histogram's cumulative buckets
/// `(le, count)` (both sorted by bound, the same bounds): cumulative too. A histogram that
/// was reset meanwhile gives `now`'s buckets.
pub(crate) fn delta(before: &[(f64, f64)], now: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let reset = before.len() != now.len()
        || before
            .iter()
            .zip(now)
            .any(|(b, n)| b.0.total_cmp(&n.0).is_ne() || n.1 < b.1);
    if reset {
        return now.to_vec();
    }
    before
        .iter()
        .zip(now)
        .map(|(b, n)| (n.0, n.1 - b.1))
        .collect()
}

/// Cumulative buckets `(le, count)` of several histograms (each sorted by bound) added up
/// bound by bound: the histogram of all their observations.
pub(crate) fn merge(histograms: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let mut total: Vec<(f64, f64)> = Vec::new();
    for histogram in histograms {
        for &(le, count) in histogram {
            match total
                .iter_mut()
                .find(|(bound, _)| bound.total_cmp(&le).is_eq())
            {
                Some(bucket) => bucket.1 += count,
                None => total.push((le, count)),
            }
        }
    }
    total.sort_by(|a, b| a.0.total_cmp(&b.0));
    total
}

/// The `q` quantile (0 to 1) of cumulative buckets; `None` without observations. An answer
/// in the `+Inf` bucket is the highest finite bound.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = count - lower.1;
            if inside <= 0.0 {
                return Some(bound);
            }
            return Some(lower.0 + (bound - lower.0) * (rank - lower.1) / inside);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_bound_by_bound() {
        let a = vec![(0.1, 1.0), (1.0, 3.0), (f64::INFINITY, 3.0)];
        let b = vec![(0.1, 0.0), (1.0, 2.0), (f64::INFINITY, 5.0)];
        assert_eq!(
            merge(&[a, b]),
            [(0.1, 1.0), (1.0, 5.0), (f64::INFINITY, 8.0)]
        );
        assert!(merge(&[]).is_empty());
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_rate_is_the_increase_per_second_and_survives_a_reset() {
        assert!(close(rate(10.0, 30.0, 2.0), 10.0));
        assert!(close(rate(30.0, 4.0, 2.0), 2.0));
        assert!(close(rate(1.0, 5.0, 0.0), 0.0));
    }

    #[test]
    fn percentiles_come_from_the_observations_between_two_readings() {
        // Before: 100 fast calls (under 1 ms). Then 10 calls between 1 and 2 ms.
        let before = [(0.001, 100.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let now = [(0.001, 100.0), (0.002, 110.0), (f64::INFINITY, 110.0)];
        let d = delta(&before, &now);
        assert_eq!(d, [(0.001, 0.0), (0.002, 10.0), (f64::INFINITY, 10.0)]);
        // Every new observation is in (1 ms, 2 ms]: p50 halfway, p99 near the top.
        assert!(close(quantile(0.5, &d).unwrap(), 0.0015));
        assert!(close(quantile(0.99, &d).unwrap(), 0.00199));
        // Over the whole history, the median is in the first bucket.
        assert!(close(quantile(0.5, &now).unwrap(), 0.001 * 55.0 / 100.0));
    }

    #[test]
    fn no_observations_have_no_percentile_and_overflow_reports_the_last_bound() {
        let idle = [(0.001, 5.0), (f64::INFINITY, 5.0)];
        assert_eq!(quantile(0.5, &delta(&idle, &idle)), None);
        let slow = [(0.001, 0.0), (0.002, 0.0), (f64::INFINITY, 3.0)];
        assert!(close(quantile(0.99, &slow).unwrap(), 0.002));
    }

    #[test]
    fn a_reset_histogram_counts_from_zero() {
        let before = [(0.001, 50.0), (f64::INFINITY, 60.0)];
        let now = [(0.001, 2.0), (f64::INFINITY, 3.0)];
        assert_eq!(delta(&before, &now), now);
    }
}
