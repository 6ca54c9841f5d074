//! FAT date and time stamps (fatgen103 §6 "Date and Time Formats") from a
//! Unix epoch, in UTC: FAT stores local time without a zone, and a build has
//! no local zone, so UTC is the only reproducible choice.

/// First representable instant: 1980-01-01 00:00:00 UTC.
const FAT_MIN: i64 = 315_532_800;
/// Last representable instant: 2107-12-31 23:59:59 UTC (stored as :58).
const FAT_MAX: i64 = 4_354_819_199;

/// A FAT timestamp as stored in a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatTime {
    /// Bits 15–9 year − 1980, 8–5 month, 4–0 day.
    pub date: u16,
    /// Bits 15–11 hours, 10–5 minutes, 4–0 seconds / 2.
    pub time: u16,
    /// Hundredths of a second past `time` (0 or 100 for the odd second),
    /// only in DIR_CrtTimeTenth.
    pub tenths: u8,
}

impl FatTime {
    /// The stamp for `epoch` seconds, clamped to 1980..=2107.
    pub fn from_unix(epoch: i64) -> Self {
        let t = epoch.clamp(FAT_MIN, FAT_MAX);
        let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        let (year, month, day) = crate::date::civil_from_days(days);
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let field = |n: i64| u16::try_from(n).expect("clamped to the FAT range");
        FatTime {
            date: field(year - 1980) << 9 | field(month) << 5 | field(day),
            time: field(h) << 11 | field(m) << 5 | field(s / 2),
            tenths: if s % 2 == 1 { 100 } else { 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(t: FatTime) -> (u16, u16, u16, u16, u16, u16) {
        (
            1980 + (t.date >> 9),
            t.date >> 5 & 15,
            t.date & 31,
            t.time >> 11,
            t.time >> 5 & 63,
            (t.time & 31) * 2,
        )
    }

    #[test]
    fn known_instants() {
        // 2023-11-14 22:13:20 UTC (SOURCE_DATE_EPOCH=1700000000).
        assert_eq!(
            parts(FatTime::from_unix(1_700_000_000)),
            (2023, 11, 14, 22, 13, 20)
        );
        // 2000-02-29 12:00:01: leap day, odd second goes to tenths.
        let t = FatTime::from_unix(951_825_601);
        assert_eq!(parts(t), (2000, 2, 29, 12, 0, 0));
        assert_eq!(t.tenths, 100);
    }

    #[test]
    fn clamps_to_the_fat_range() {
        assert_eq!(parts(FatTime::from_unix(0)), (1980, 1, 1, 0, 0, 0));
        assert_eq!(parts(FatTime::from_unix(-5)), (1980, 1, 1, 0, 0, 0));
        assert_eq!(
            parts(FatTime::from_unix(i64::MAX)),
            (2107, 12, 31, 23, 59, 58)
        );
    }
}
