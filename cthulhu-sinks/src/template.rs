//! Object name templates: `recordings/{path}/{date}/{time}-{seq}.mp4`.
//!
//! Placeholders: `{path}` (the whole stream path, `live/studio`), `{name}` (its last
//! segment, `studio`), `{date}` (`YYYY-MM-DD`), `{time}` (`HHMMSS`; both UTC, at the
//! segment's start) and `{seq}` (the segment's number within the recording, from 1,
//! zero-padded to 4 digits). `{{` and `}}` are literal braces. Any other placeholder is
//! an error, and so is a template without `{seq}` or `{time}`, whose segments would all
//! get the same name.
//!
//! A rendered name is a relative `/`-separated path: no leading `/`, no empty, `.` or
//! `..` segment, no `\` and no control characters. Stream paths are validated by the
//! core (letters, digits, `_`, `-`, `.`), so only the literal parts of a template can
//! break these rules, and [`NameTemplate::parse`] checks them once.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use cthulhu_core::StreamPath;

use crate::SinkError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Path,
    Name,
    Date,
    Time,
    Seq,
}

/// A parsed, validated object name template: `recordings/{path}/{date}/{time}-{seq}.mp4`.
///
/// Placeholders: `{path}` (the whole stream path, `live/studio`), `{name}` (its last
/// segment, `studio`), `{date}` (`YYYY-MM-DD`), `{time}` (`HHMMSS`; both UTC, at the
/// segment's start) and `{seq}` (the segment's number within the publish session, from
/// 1, zero-padded to 4 digits). `{{` and `}}` are literal braces. Any other
/// placeholder is an error, and so is a template without `{seq}` or `{time}`. Rendered
/// names are relative paths without empty, `.` or `..` segments, `\` or control
/// characters.
#[derive(Clone, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Parses and validates a template.
    pub fn parse(template: &str) -> Result<Self, SinkError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut key = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(k) if k.is_ascii_alphanumeric() || k == '_' => key.push(k),
                            _ => {
                                return Err(SinkError::Template(format!(
                                    "{template:?}: unterminated or malformed placeholder \
                                     (write {{{{ for a literal brace)"
                                )));
                            }
                        }
                    }
                    let part = match key.as_str() {
                        "path" => Part::Path,
                        "name" => Part::Name,
                        "date" => Part::Date,
                        "time" => Part::Time,
                        "seq" => Part::Seq,
                        other => {
                            return Err(SinkError::Template(format!(
                                "{template:?}: unknown placeholder {{{other}}}; known are \
                                 {{path}}, {{name}}, {{date}}, {{time}} and {{seq}}"
                            )));
                        }
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                '}' => {
                    return Err(SinkError::Template(format!(
                        "{template:?}: unmatched '}}' (write }}}} for a literal brace)"
                    )));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, Part::Seq | Part::Time)) {
            return Err(SinkError::Template(format!(
                "{template:?} has neither {{seq}} nor {{time}}: every segment would get the same name"
            )));
        }
        let parsed = Self {
            source: template.to_owned(),
            parts,
        };
        // Placeholders render to safe text, so a sample render checks the literals.
        let sample = StreamPath::from_parts("app", "name")
            .map_err(|e| SinkError::Template(e.to_string()))?;
        parsed.render(&sample, UNIX_EPOCH, 1)?;
        Ok(parsed)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the name of segment `seq` of a recording of `path` whose segment starts
    /// at `start`.
    pub fn render(
        &self,
        path: &StreamPath,
        start: SystemTime,
        seq: u64,
    ) -> Result<String, SinkError> {
        let (date, time) = utc_date_time(start);
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Path => out.push_str(path.as_str()),
                Part::Name => out.push_str(path.name()),
                Part::Date => out.push_str(&date),
                Part::Time => out.push_str(&time),
                Part::Seq => out.push_str(&format!("{seq:04}")),
            }
        }
        check_name(&out).map_err(|why| {
            SinkError::Template(format!("{:?} renders {out:?}: {why}", self.source))
        })?;
        Ok(out)
    }
}

impl fmt::Debug for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameTemplate({:?})", self.source)
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Checks that `name` is a safe relative object name.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.starts_with('/') {
        return Err("names may not start with '/'");
    }
    if name.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("names may not contain '\\' or control characters");
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err("names may not contain empty segments ('//' or a trailing '/')"),
            "." | ".." => return Err("names may not contain '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// `YYYY-MM-DD` and `HHMMSS` in UTC. Times before 1970 render as 1970-01-01 000000.
fn utc_date_time(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn path() -> StreamPath {
        StreamPath::new("live/studio").unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renders_every_placeholder() {
        let t = NameTemplate::parse("recordings/{path}/{date}/{time}-{seq}.mp4").unwrap();
        // 2024-02-29 13:05:09 UTC
        let name = t.render(&path(), at(1_709_211_909), 7).unwrap();
        assert_eq!(name, "recordings/live/studio/2024-02-29/130509-0007.mp4");
        let t = NameTemplate::parse("{name}-{seq}.ts").unwrap();
        assert_eq!(t.render(&path(), at(0), 12_345).unwrap(), "studio-12345.ts");
        let t = NameTemplate::parse("{{x}}/{name}_{time}.flv").unwrap();
        assert_eq!(
            t.render(&path(), at(59), 1).unwrap(),
            "{x}/studio_000059.flv"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for (bad, why) in [
            ("{path}/{seq}.{ext}", "unknown placeholder {ext}"),
            ("{path}/{seq", "unterminated"),
            ("{path}/seq}.ts", "unmatched"),
            ("{path}/x.ts", "neither {seq} nor {time}"),
            ("/abs/{seq}.ts", "start with '/'"),
            ("../{seq}.ts", "'..'"),
            ("a//{seq}.ts", "empty segments"),
            ("a/./{seq}.ts", "'.'"),
            ("{path}/{seq}/", "empty segments"),
            ("a\\{seq}", "'\\'"),
            ("a\n{seq}", "control"),
            ("{ seq }", "malformed"),
        ] {
            let err = NameTemplate::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn dates_match_known_days() {
        for (secs, date) in [
            (0, "1970-01-01"),
            (951_782_400, "2000-02-29"),
            (951_868_800, "2000-03-01"),
            (4_107_542_400, "2100-03-01"),
            (1_735_689_599, "2024-12-31"),
            (1_735_689_600, "2025-01-01"),
        ] {
            assert_eq!(utc_date_time(at(secs)).0, date, "{secs}");
        }
        assert_eq!(
            utc_date_time(UNIX_EPOCH - Duration::from_secs(5)).0,
            "1970-01-01"
        );
    }

    /// The inverse (`days_from_civil`), to check `civil_from_days` on every day.
    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    proptest! {
        #[test]
        fn civil_round_trips(days in 0i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
            // consecutive days are consecutive dates
            let (y2, m2, d2) = civil_from_days(days + 1);
            prop_assert!(d2 == d + 1 || (d2 == 1 && (m2 == m + 1 || (m == 12 && m2 == 1 && y2 == y + 1))));
        }

        #[test]
        fn rendered_names_are_safe(
            app in "[a-zA-Z0-9_.-]{1,20}",
            name in "[a-zA-Z0-9_.-]{1,20}",
            secs in 0u64..10_000_000_000,
            seq in 1u64..100_000,
        ) {
            prop_assume!(app != "." && app != ".." && name != "." && name != "..");
            let p = StreamPath::from_parts(&app, &name).unwrap();
            let t = NameTemplate::parse("rec/{path}/{date}/{time}-{seq}-{name}.ts").unwrap();
            let out = t.render(&p, at(secs), seq).unwrap();
            prop_assert!(check_name(&out).is_ok());
            let seq_text = format!("{seq:04}");
            prop_assert!(out.contains(&seq_text));
        }
    }
}
