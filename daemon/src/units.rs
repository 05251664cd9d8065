//! Rates and sizes as operators write them, for every flag and settings key.
//!
//! Case is read as written: `b` is a bit and `B` a byte. A unit that people
//! write for both (`Mb`, `mb`, `MB` without `/s`) is refused with both
//! readings in the message, because a rate read as bytes when bits were meant
//! floods the network eightfold. The accepted spellings are the table in
//! docs/OPERATIONS.md; [`RATE_UNITS`] and [`SIZE_UNITS`] are that table.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::str::FromStr;

/// A rate, held in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    bits_per_sec: u64,
}

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}`: give a number and a unit, e.g. 200Mbit (megabits per second) or 25MB/s (megabytes per second)")]
    RateWithoutUnit(String),
    #[error("`{given}` is ambiguous: write {number}Mbit for megabits per second, or {number}MB/s for megabytes per second (8 times as much)", given = .0, number = .1)]
    AmbiguousRate(String, String),
    #[error("`{0}`: unknown rate unit; write e.g. 200Mbit, 1Gbps or 25MB/s (docs/OPERATIONS.md lists every spelling)")]
    UnknownRateUnit(String),
    #[error("`{0}` is ambiguous: a size is in bytes; write {1}MB or {1}MiB (a bit-size such as Mb has no use here)")]
    AmbiguousSize(String, String),
    #[error("`{0}`: unknown size unit; write e.g. 1048576, 1MiB or 64MB (docs/OPERATIONS.md lists every spelling)")]
    UnknownSizeUnit(String),
    #[error("`{0}`: not a number followed by a unit")]
    NotANumber(String),
    #[error("`{0}`: must be above 0")]
    Zero(String),
    #[error("`{0}`: too large")]
    TooLarge(String),
}

/// Bits per second of one unit.
const KILO: u64 = 1_000;
const MEGA: u64 = 1_000_000;
const GIGA: u64 = 1_000_000_000;
const KIBI: u64 = 1 << 10;
const MEBI: u64 = 1 << 20;
const GIBI: u64 = 1 << 30;

/// Every rate unit accepted, and how many bits per second it is.
pub const RATE_UNITS: &[(&str, u64)] = &[
    ("bit", 1),
    ("bit/s", 1),
    ("bps", 1),
    ("kbit", KILO),
    ("Kbit", KILO),
    ("kbit/s", KILO),
    ("Kbit/s", KILO),
    ("kbps", KILO),
    ("Kbps", KILO),
    ("mbit", MEGA),
    ("Mbit", MEGA),
    ("mbit/s", MEGA),
    ("Mbit/s", MEGA),
    ("mbps", MEGA),
    ("Mbps", MEGA),
    ("gbit", GIGA),
    ("Gbit", GIGA),
    ("gbit/s", GIGA),
    ("Gbit/s", GIGA),
    ("gbps", GIGA),
    ("Gbps", GIGA),
    ("B/s", 8),
    ("kB/s", 8 * KILO),
    ("KB/s", 8 * KILO),
    ("MB/s", 8 * MEGA),
    ("GB/s", 8 * GIGA),
    ("KiB/s", 8 * KIBI),
    ("MiB/s", 8 * MEBI),
    ("GiB/s", 8 * GIBI),
    ("kbyte", 8 * KILO),
    ("mbyte", 8 * MEGA),
    ("gbyte", 8 * GIGA),
    ("kbyte/s", 8 * KILO),
    ("mbyte/s", 8 * MEGA),
    ("gbyte/s", 8 * GIGA),
];

/// Every size unit accepted, and how many bytes it is. `K`, `M` and `G`
/// alone are binary, as `truncate` and `dd` read them.
pub const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("kB", KILO),
    ("KB", KILO),
    ("MB", MEGA),
    ("GB", GIGA),
    ("K", KIBI),
    ("M", MEBI),
    ("G", GIBI),
    ("KiB", KIBI),
    ("MiB", MEBI),
    ("GiB", GIBI),
];

/// Largest rate: 1 Tbit/s.
pub const MAX_RATE_BITS: u64 = 1_000 * GIGA;

/// Split `200.5 Mbit` into `("200.5", "Mbit")`.
fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    (&s[..at], s[at..].trim())
}

/// `number × scale`, rounded, checked against `max`.
fn scaled(given: &str, number: &str, scale: u64, max: u64) -> Result<u64, UnitError> {
    let n: f64 = number.parse().map_err(|_| UnitError::NotANumber(given.into()))?;
    let v = (n * scale as f64).round();
    if !v.is_finite() || v > max as f64 {
        return Err(UnitError::TooLarge(given.into()));
    }
    Ok(v as u64)
}

impl Rate {
    pub const fn from_bits_per_sec(bits_per_sec: u64) -> Rate {
        Rate { bits_per_sec }
    }

    pub fn bits_per_sec(&self) -> u64 {
        self.bits_per_sec
    }

    /// Bytes per second, at least 1.
    pub fn bytes_per_sec(&self) -> u64 {
        (self.bits_per_sec / 8).max(1)
    }
}

impl FromStr for Rate {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Rate, UnitError> {
        let (number, unit) = split(s);
        if number.is_empty() {
            return Err(UnitError::NotANumber(s.into()));
        }
        if unit.is_empty() {
            return Err(UnitError::RateWithoutUnit(s.trim().into()));
        }
        let Some(&(_, scale)) = RATE_UNITS.iter().find(|(u, _)| *u == unit) else {
            // Prefix letters alone, or with a bare b/B: read as bits by some and
            // bytes by others.
            let ambiguous = unit.trim_end_matches("/s").trim_end_matches("ps");
            let prefix = ambiguous.trim_end_matches(['b', 'B']);
            if ambiguous.len() <= 2 && matches!(prefix, "" | "k" | "K" | "m" | "M" | "g" | "G") {
                return Err(UnitError::AmbiguousRate(s.trim().into(), number.into()));
            }
            return Err(UnitError::UnknownRateUnit(s.trim().into()));
        };
        match scaled(s, number, scale, MAX_RATE_BITS)? {
            0 => Err(UnitError::Zero(s.trim().into())),
            bits_per_sec => Ok(Rate { bits_per_sec }),
        }
    }
}

impl fmt::Display for Rate {
    /// In the largest bit unit that shows it exactly: `200Mbit/s`, `1.5Gbit/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec;
        let (scale, unit) = match b {
            _ if b >= GIGA => (GIGA, "Gbit/s"),
            _ if b >= MEGA => (MEGA, "Mbit/s"),
            _ if b >= KILO => (KILO, "kbit/s"),
            _ => (1, "bit/s"),
        };
        if b % scale == 0 {
            write!(f, "{}{unit}", b / scale)
        } else {
            write!(f, "{}{unit}", b as f64 / scale as f64)
        }
    }
}

impl FromStr for Size {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Size, UnitError> {
        let (number, unit) = split(s);
        if number.is_empty() {
            return Err(UnitError::NotANumber(s.into()));
        }
        let Some(&(_, scale)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
            if unit.len() <= 2 && unit.ends_with('b') || matches!(unit, "k" | "m" | "g" | "mB" | "gB") {
                return Err(UnitError::AmbiguousSize(s.trim().into(), number.into()));
            }
            return Err(UnitError::UnknownSizeUnit(s.trim().into()));
        };
        Ok(Size(scaled(s, number, scale, u64::MAX / 2)?))
    }
}

impl fmt::Display for Size {
    /// In the largest binary unit that shows it exactly: `1MiB`, `1500B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0B"),
            b if b % GIBI == 0 => write!(f, "{}GiB", b / GIBI),
            b if b % MEBI == 0 => write!(f, "{}MiB", b / MEBI),
            b if b % KIBI == 0 => write!(f, "{}KiB", b / KIBI),
            b => write!(f, "{b}B"),
        }
    }
}

/// A settings value: a string with a unit; for a size, also a bare integer
/// (bytes). A bare number for a rate is refused like `--rate 200`.
struct UnitVisitor<T>(std::marker::PhantomData<T>);

impl<T> Visitor<'_> for UnitVisitor<T>
where
    T: FromStr<Err = UnitError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number with a unit, such as \"200Mbit\" or \"64MiB\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

/// A sending rate: fixed, or `auto` (the hubs' feedback sets it within
/// bounds; `hubcast_protocol::rate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateSetting {
    Auto,
    Fixed(Rate),
}

impl FromStr for RateSetting {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<RateSetting, UnitError> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(RateSetting::Auto);
        }
        s.parse().map(RateSetting::Fixed)
    }
}

impl fmt::Display for RateSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateSetting::Auto => f.write_str("auto"),
            RateSetting::Fixed(r) => r.fmt(f),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RateSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RateSetting, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

/// For a settings key held as `u32` bytes (`chunk_size = "1MiB"` or `1048576`).
pub fn deserialize_u32_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let size: Size = serde::Deserialize::deserialize(d)?;
    u32::try_from(size.0).map_err(|_| de::Error::custom(format!("`{size}`: too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Result<u64, UnitError> {
        s.parse::<Rate>().map(|r| r.bits_per_sec())
    }

    /// The spellings of docs/OPERATIONS.md, each with 20 of it, and the docs
    /// list every one.
    #[test]
    fn every_rate_spelling_in_the_table_reads_as_documented() {
        for &(unit, scale) in RATE_UNITS {
            assert_eq!(rate(&format!("20{unit}")), Ok(20 * scale), "20{unit}");
            assert_eq!(rate(&format!("20 {unit}")), Ok(20 * scale), "20 {unit}");
        }
        let docs = include_str!("../../docs/OPERATIONS.md");
        for &(unit, _) in RATE_UNITS {
            assert!(docs.contains(&format!("`{unit}`")), "docs/OPERATIONS.md lacks `{unit}`");
        }
        for &(unit, _) in &SIZE_UNITS[1..] {
            assert!(docs.contains(&format!("`{unit}`")), "docs/OPERATIONS.md lacks `{unit}`");
        }
    }

    #[test]
    fn megabits_and_megabytes_are_told_apart_by_case_and_spelling() {
        assert_eq!(rate("200Mbps"), Ok(200_000_000));
        assert_eq!(rate("200mbit"), Ok(200_000_000));
        assert_eq!(rate("200MB/s"), Ok(1_600_000_000));
        assert_eq!(rate("25MiB/s"), Ok(25 * 8 * (1 << 20)));
        assert_eq!(rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(rate("50mbyte"), Ok(400_000_000));
        assert_eq!("200Mbit".parse::<Rate>().unwrap().bytes_per_sec(), 25_000_000);
    }

    #[test]
    fn ambiguous_rates_are_refused_naming_both_readings() {
        for bad in ["200Mb", "200mb", "200MB", "200M", "200m", "200Mb/s", "200mb/s", "200MBps", "1G", "10kb"]
        {
            let e = bad.parse::<Rate>().unwrap_err();
            assert!(matches!(e, UnitError::AmbiguousRate(..)), "{bad}: {e}");
            let text = e.to_string();
            assert!(text.contains("megabits") && text.contains("megabytes"), "{text}");
        }
    }

    #[test]
    fn other_bad_rates_are_refused_with_what_to_write() {
        assert!(matches!("200".parse::<Rate>(), Err(UnitError::RateWithoutUnit(_))));
        assert!(matches!("fast".parse::<Rate>(), Err(UnitError::NotANumber(_))));
        assert!(matches!("5furlong".parse::<Rate>(), Err(UnitError::UnknownRateUnit(_))));
        assert!(matches!("0Mbit".parse::<Rate>(), Err(UnitError::Zero(_))));
        assert!(matches!("-1Mbit".parse::<Rate>(), Err(UnitError::NotANumber(_))));
        assert!(matches!("1.2.3Mbit".parse::<Rate>(), Err(UnitError::NotANumber(_))));
        assert!(matches!("9999999Gbit".parse::<Rate>(), Err(UnitError::TooLarge(_))));
    }

    #[test]
    fn rates_display_in_bits() {
        for (s, shown) in [("200mbit", "200Mbit/s"), ("1.5Gbps", "1.5Gbit/s"), ("25MB/s", "200Mbit/s")] {
            assert_eq!(s.parse::<Rate>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn every_size_spelling_reads_as_documented_and_bit_sizes_are_refused() {
        for &(unit, scale) in SIZE_UNITS {
            assert_eq!(format!("3{unit}").parse::<Size>(), Ok(Size(3 * scale)), "3{unit}");
        }
        assert_eq!("1048576".parse::<Size>(), Ok(Size(1 << 20)));
        assert_eq!("0".parse::<Size>(), Ok(Size(0)));
        assert_eq!("1.5KiB".parse::<Size>(), Ok(Size(1536)));
        for bad in ["1Mb", "1mb", "1kb", "1m", "1mB"] {
            assert!(matches!(bad.parse::<Size>(), Err(UnitError::AmbiguousSize(..))), "{bad}");
        }
        assert!(matches!("1 parsec".parse::<Size>(), Err(UnitError::UnknownSizeUnit(_))));
        assert_eq!(Size(1 << 20).to_string(), "1MiB");
        assert_eq!(Size(1500).to_string(), "1500B");
    }

    #[test]
    fn settings_take_strings_and_sizes_take_bare_bytes() {
        #[derive(serde::Deserialize)]
        struct S {
            rate: Rate,
            size: Size,
        }
        let s: S = toml::from_str("rate = \"100Mbit\"\nsize = 4096\n").unwrap();
        assert_eq!((s.rate.bits_per_sec(), s.size), (100_000_000, Size(4096)));
        let e = toml::from_str::<S>("rate = 100\nsize = 1\n").err().unwrap().to_string();
        assert!(e.contains("200Mbit") || e.contains("give a number and a unit"), "{e}");
        let e = toml::from_str::<S>("rate = \"100Mb\"\nsize = 1\n").err().unwrap().to_string();
        assert!(e.contains("ambiguous"), "{e}");
    }
}
