//! The numbers a playlist advertises: target durations and bit rates (RFC 8216).

use super::Segment;

/// Formats a duration the way `#EXTINF` carries it: three decimals, negative or NaN as 0.
pub(crate) fn format_duration(seconds: f64) -> String {
    format!("{:.3}", seconds.max(0.0))
}

/// `#EXT-X-TARGETDURATION` for these segments.
///
/// RFC 8216 §4.3.3.1: every `#EXTINF` duration, *rounded to the nearest integer*, must be
/// <= the target duration. The check is made on the value as printed (three decimals), which
/// is what players parse: 2.4996 prints as `2.500` and rounds to 3, not 2. Never below 1.
pub fn target_duration(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .map(|s| {
            let printed: f64 = format_duration(s.duration).parse().unwrap_or(0.0);
            printed.round() as u64
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Bits per second of `bytes` over `seconds`, rounded up (a ceiling keeps `BANDWIDTH` an
/// upper bound; the tiny epsilon keeps float noise such as 80000.00000000001 from adding a
/// bit); 0 for an empty or zero-length set.
fn rate(bytes: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (bytes as f64 * 8.0 / seconds - 1e-6).ceil().max(0.0) as u64
    } else {
        0
    }
}

/// Average bit rate over all segments, given as `(size in bytes, duration in seconds)`.
pub fn average_bit_rate(segments: &[(u64, f64)]) -> u64 {
    let bytes = segments.iter().map(|s| s.0).sum();
    let seconds = segments.iter().map(|s| s.1.max(0.0)).sum();
    rate(bytes, seconds)
}

/// Peak segment bit rate as RFC 8216 §4.3.4.2 defines it: the largest bit rate of any
/// contiguous run of segments whose total duration is between 0.5 and 1.5 times the target
/// duration. Taking runs rather than single segments keeps a very short last segment (a few
/// frames plus a keyframe and the PAT/PMT) from inflating `BANDWIDTH`.
///
/// Falls back to the average when no run qualifies (only possible when every segment is far
/// shorter than the target duration).
pub fn peak_bit_rate(segments: &[(u64, f64)], target_duration: u64) -> u64 {
    let target = target_duration as f64;
    let (lo, hi) = (0.5 * target, 1.5 * target);
    let mut peak: Option<u64> = None;
    for start in 0..segments.len() {
        let (mut bytes, mut seconds) = (0u64, 0.0f64);
        for &(b, d) in &segments[start..] {
            bytes += b;
            seconds += d.max(0.0);
            if seconds > hi {
                break;
            }
            if seconds >= lo {
                let r = rate(bytes, seconds);
                peak = Some(peak.map_or(r, |p| p.max(r)));
            }
        }
    }
    peak.unwrap_or_else(|| average_bit_rate(segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(uri: &str, duration: f64) -> Segment {
        Segment::new(uri, duration)
    }

    #[test]
    fn target_duration_rounds_the_printed_value() {
        assert_eq!(target_duration(&[seg("a", 2.002), seg("b", 2.002)]), 2);
        assert_eq!(target_duration(&[seg("a", 2.4)]), 2);
        assert_eq!(target_duration(&[seg("a", 2.5)]), 3);
        // Prints as 2.500, which a player rounds to 3.
        assert_eq!(target_duration(&[seg("a", 2.4996)]), 3);
        assert_eq!(target_duration(&[seg("a", 6.0), seg("b", 1.0)]), 6);
        assert_eq!(target_duration(&[seg("a", 0.2)]), 1);
        assert_eq!(target_duration(&[seg("a", f64::NAN)]), 1);
    }

    #[test]
    fn average_bit_rate_is_total_bits_over_total_time() {
        assert_eq!(
            average_bit_rate(&[(250_000, 2.0), (125_000, 1.0)]),
            1_000_000
        );
        assert_eq!(average_bit_rate(&[(1, 3.0)]), 3); // 2.67 rounded up
        assert_eq!(average_bit_rate(&[]), 0);
    }

    #[test]
    fn peak_bit_rate_ignores_a_short_tail_segment() {
        // 2 s segments at 1 Mbit/s and 1.2 Mbit/s, then a 0.1 s tail at 4 Mbit/s.
        let segments = [(250_000, 2.0), (300_000, 2.0), (50_000, 0.1)];
        // Runs within [1, 3] s: seg0 (1.0M), seg1 (1.2M), seg1+tail (350 000 B / 2.1 s).
        assert_eq!(peak_bit_rate(&segments, 2), 1_333_334);
        // Target 6: runs must last 3..9 s, so only seg0+seg1 (1.1M) and all three
        // (600 000 B / 4.1 s) qualify.
        assert_eq!(peak_bit_rate(&segments, 6), 1_170_732);
    }

    #[test]
    fn peak_bit_rate_falls_back_to_the_average() {
        // Every run is shorter than half the target.
        assert_eq!(peak_bit_rate(&[(1_000, 0.1), (1_000, 0.1)], 1), 80_000);
        assert_eq!(peak_bit_rate(&[], 2), 0);
    }
}
