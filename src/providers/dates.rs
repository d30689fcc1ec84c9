//! Reads the date formats the five providers send, all into UTC.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Parses RFC 3339 (`2019-01-30T13:30:00Z`, `2013-01-03T09:11:51-03:00`), an offset
/// without a colon (`2013-01-03T09:11:51+0000`), Ecwid's `2021-11-03 19:53:12 +0000`,
/// and a date without a zone (`2015-09-11T05:54:27.000000`, taken as UTC).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, fmt) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(Utc.from_utc_datetime(&d));
        }
    }
    None
}

/// Epoch seconds (Sendwithus `created`).
pub fn from_epoch(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_format() {
        let expect =
            |s: &str, iso: &str| assert_eq!(parse_date(s).unwrap().to_rfc3339(), iso, "{s}");
        expect("2019-01-30T13:30:00Z", "2019-01-30T13:30:00+00:00");
        expect("2013-01-03T09:11:51-03:00", "2013-01-03T12:11:51+00:00");
        expect("2013-01-03T09:11:51+0000", "2013-01-03T09:11:51+00:00");
        expect("2021-11-03 19:53:12 +0000", "2021-11-03T19:53:12+00:00");
        expect("2015-09-11T05:54:27.000000", "2015-09-11T05:54:27+00:00");
        assert!(parse_date("yesterday").is_none());
        assert_eq!(
            from_epoch(0).unwrap().to_rfc3339(),
            "1970-01-01T00:00:00+00:00"
        );
    }
}
