//! Sizes as operators write them (`4GiB`, `10%`) and as people read them (`224 MiB`).

use std::str::FromStr;

use serde::Deserialize;

/// Bytes in the largest binary unit that keeps the number at or above 1, one decimal
/// when it is below 10.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A size in bytes, written like PostgreSQL's settings: `4GiB`, `512MB`, `1024` (units are
/// powers of 1024, as in postgresql.conf; `kB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let shift = match unit.trim() {
            "" | "B" => 0,
            "kB" | "KB" | "KiB" => 10,
            "MB" | "MiB" => 20,
            "GB" | "GiB" => 30,
            "TB" | "TiB" => 40,
            _ => return Err(format!("{s:?} is not a size like \"512MiB\" or \"50GiB\"")),
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .map(Bytes)
            .ok_or_else(|| format!("{s:?} is not a size like \"512MiB\" or \"50GiB\""))
    }
}

/// Reads a setting from its text form with the type's `FromStr`, so the file, the flags
/// and the environment accept exactly the same spellings.
pub fn deserialize_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err = String>,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

/// The `min_free` valve: free space on pg_wal's file system, as a share or a size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FreeSpace {
    Percent(f64),
    Size(Bytes),
}

impl FreeSpace {
    /// The threshold in bytes on a file system of `total` bytes; 0 means disabled.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            FreeSpace::Percent(p) => (total as f64 * p / 100.0) as u64,
            FreeSpace::Size(b) => b.0,
        }
    }
}

impl std::fmt::Display for FreeSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreeSpace::Percent(p) => write!(f, "{p}%"),
            FreeSpace::Size(b) => write!(f, "{}", human_bytes(b.0)),
        }
    }
}

impl FromStr for FreeSpace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(FreeSpace::Percent(p)),
                _ => Err(format!("{s:?} is not a percentage from 0% to 100%")),
            },
            None => s.parse().map(FreeSpace::Size),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        for (b, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (224 << 20, "224 MiB"),
            (16 << 20, "16 MiB"),
            (3 << 29, "1.5 GiB"),
            (5 << 40, "5 TiB"),
        ] {
            assert_eq!(human_bytes(b), want);
        }
    }

    #[test]
    fn sizes_and_shares() {
        let sizes = [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("4GiB", Some(4 << 30)),
            ("512MB", Some(512 << 20)),
            ("16 kB", Some(16 << 10)),
            ("1TiB", Some(1 << 40)),
            ("1.5GB", None),
            ("GB", None),
            ("-1MB", None),
            ("1PB", None),
            ("99999999999TB", None),
        ];
        for (text, want) in sizes {
            assert_eq!(text.parse::<Bytes>().ok().map(|b| b.0), want, "{text}");
        }
        assert_eq!("10%".parse::<FreeSpace>(), Ok(FreeSpace::Percent(10.0)));
        assert_eq!("2.5 %".parse::<FreeSpace>(), Ok(FreeSpace::Percent(2.5)));
        assert!("101%".parse::<FreeSpace>().is_err());
        assert_eq!(
            "4GiB".parse::<FreeSpace>(),
            Ok(FreeSpace::Size(Bytes(4 << 30)))
        );
        assert_eq!(FreeSpace::Percent(10.0).bytes(1000), 100);
    }
}
