//! Values of a filing that have a shape of their own, made only through `parse` ("parse, don't
//! validate"): once built, later code can trust them. Each `parse` says exactly what is wrong.
//!
//! Owns: the national formats — 统一社会信用代码 (GB 32100-2015), 居民身份证号码
//! (GB 11643-1999, ISO 7064 MOD 11-2), domain names (IDN allowed), record numbers
//! (`京ICP备2026001234号-1`, `-1A`, `京ICP证123456号`), province codes, phone numbers.
//! Must not know about bureaus, code tables or configuration.

use chrono::{Datelike, NaiveDate};

use crate::datafile::upload::ascii_domain;

/// The 31 characters GB 32100-2015 allows (no I, O, S, V, Z).
const USCC_CHARS: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A unified social credit code (统一社会信用代码) with a correct check character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uscc(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    #[error("must be 18 characters of 0-9 and A-Y without I, O, S, V, Z (GB 32100-2015)")]
    Format,
    #[error("the check character is {found:?}, GB 32100-2015 gives {expected:?}")]
    Check { expected: char, found: char },
}

impl Uscc {
    pub fn parse(s: &str) -> Result<Self, UsccError> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 18 || !chars.iter().all(|c| USCC_CHARS.contains(*c)) {
            return Err(UsccError::Format);
        }
        let body: String = chars[..17].iter().collect();
        let expected = Self::check_char(&body).unwrap_or('0');
        if chars[17] != expected {
            return Err(UsccError::Check {
                expected,
                found: chars[17],
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The GB 32100-2015 check character of the first 17 characters (None when one of them
    /// is not allowed or there are not 17).
    pub fn check_char(body: &str) -> Option<char> {
        let mut sum = 0u32;
        let mut n = 0;
        for (c, w) in body.chars().zip(USCC_WEIGHTS) {
            sum += USCC_CHARS.find(c)? as u32 * w;
            n += 1;
        }
        if n != 17 || body.chars().count() != 17 {
            return None;
        }
        USCC_CHARS.chars().nth(((31 - sum % 31) % 31) as usize)
    }
}

const RID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const RID_CHECK: &[u8; 11] = b"10X98765432";

/// A resident ID number (居民身份证, GB 11643-1999): 18 characters, a real birth date, the ISO
/// 7064 MOD 11-2 check character, and an uppercase `X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentId {
    number: String,
    birth: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidentIdError {
    #[error("must be 17 digits and a check digit or X (18 characters, GB 11643-1999)")]
    Format,
    #[error("the birth date {0} is not a date")]
    Date(String),
    #[error("the check character is {found:?}, ISO 7064 MOD 11-2 gives {expected:?}")]
    Check { expected: char, found: char },
    /// Valid but for the case: the guides require an uppercase X; not silently fixed.
    #[error("ends in a lowercase x; the bureau requires an uppercase X")]
    LowercaseX,
}

impl ResidentId {
    /// Every fault of `s` (a lowercase `x` is reported besides any other fault).
    pub fn parse_all(s: &str) -> Result<Self, Vec<ResidentIdError>> {
        let b = s.as_bytes();
        if b.len() != 18
            || !b[..17].iter().all(u8::is_ascii_digit)
            || !(b[17].is_ascii_digit() || b[17] == b'X' || b[17] == b'x')
        {
            return Err(vec![ResidentIdError::Format]);
        }
        let mut errors = Vec::new();
        if b[17] == b'x' {
            errors.push(ResidentIdError::LowercaseX);
        }
        let date = &s[6..14];
        let birth = NaiveDate::parse_from_str(date, "%Y%m%d").ok();
        if birth.is_none() {
            errors.push(ResidentIdError::Date(date.to_owned()));
        }
        let expected = Self::check_char(&s[..17]).unwrap_or('0');
        let found = char::from(b[17]).to_ascii_uppercase();
        if found != expected {
            errors.push(ResidentIdError::Check {
                expected,
                found: char::from(b[17]),
            });
        }
        match birth {
            Some(birth) if errors.is_empty() => Ok(Self {
                number: s.to_owned(),
                birth,
            }),
            _ => Err(errors),
        }
    }

    /// The ISO 7064 MOD 11-2 check character of 17 digits (None otherwise).
    pub fn check_char(body: &str) -> Option<char> {
        let b = body.as_bytes();
        if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let sum: u32 = b
            .iter()
            .zip(RID_WEIGHTS)
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        Some(char::from(RID_CHECK[(sum % 11) as usize]))
    }

    pub fn parse(s: &str) -> Result<Self, ResidentIdError> {
        Self::parse_all(s).map_err(|mut e| e.remove(0))
    }

    pub fn as_str(&self) -> &str {
        &self.number
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth
    }

    /// Whole years of age on `day`.
    pub fn age_on(&self, day: NaiveDate) -> i32 {
        let mut age = day.year() - self.birth.year();
        if (day.month(), day.day()) < (self.birth.month(), self.birth.day()) {
            age -= 1;
        }
        age
    }
}

/// A domain name: at least two labels of letters (any script), digits and inner hyphens, that
/// writes in ASCII (punycode) within 253 characters; kept lowercase in both forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName {
    unicode: String,
    ascii: String,
}

impl DomainName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = s.trim();
        let d = d.strip_suffix('.').unwrap_or(d).to_lowercase();
        let labels: Vec<&str> = d.split('.').collect();
        if labels.len() < 2 {
            return Err(format!("{s:?} has no top-level domain"));
        }
        for l in &labels {
            if l.is_empty()
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            {
                return Err(format!(
                    "{s:?}: label {l:?} must be letters, digits and inner hyphens"
                ));
            }
        }
        let ascii = ascii_domain(&d).ok_or_else(|| format!("{s:?} cannot be written in ASCII"))?;
        if ascii.len() > 253 || ascii.split('.').any(|l| l.len() > 63) {
            return Err(format!("{s:?} is longer than a domain name may be"));
        }
        Ok(Self { unicode: d, ascii })
    }

    pub fn ascii(&self) -> &str {
        &self.ascii
    }

    /// Whether the name ends in `suffix` (`com`, `com.cn`, `中国` or its punycode) with at
    /// least one label before it.
    pub fn has_suffix(&self, suffix: &str) -> bool {
        let s = suffix.trim().trim_start_matches('.').to_lowercase();
        let s_ascii = ascii_domain(&s).unwrap_or_else(|| s.clone());
        let under = |name: &str, suf: &str| {
            name.strip_suffix(suf)
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty())
        };
        under(&self.ascii, &s_ascii) || under(&self.unicode, &s)
    }

    /// The registrable name a home URL may be served on: itself or `www.` in front.
    pub fn serves(&self, host: &DomainName) -> bool {
        host.ascii == self.ascii || host.ascii.strip_prefix("www.") == Some(self.ascii.as_str())
    }
}

/// What a record number numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `京ICP备2026001234号`
    Subject,
    /// `京ICP备2026001234号-1`
    Website(u32),
    /// `京ICP备2026001234号-1A`
    App(u32),
    /// `京ICP证123456号` (a value-added telecom licence)
    Licence,
}

/// A filing record number: `{简称}ICP备{digits}号`, optionally `-n` or `-nA`, or `{简称}ICP证{digits}号`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordNumber {
    text: String,
    abbrev: String,
    kind: RecordKind,
}

impl RecordNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a record number (京ICP备2026001234号, …号-1, …号-1A, 京ICP证123456号)"
            )
        };
        let t = s.trim();
        let mut chars = t.chars();
        let abbrev = chars.next().filter(|c| !c.is_ascii()).ok_or_else(bad)?;
        let rest = chars.as_str();
        let (licence, rest) = if let Some(r) = rest.strip_prefix("ICP备") {
            (false, r)
        } else if let Some(r) = rest.strip_prefix("ICP证") {
            (true, r)
        } else {
            return Err(bad());
        };
        let (digits, tail) = rest.split_once('号').ok_or_else(bad)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let kind = match (licence, tail) {
            (true, "") => RecordKind::Licence,
            (true, _) => return Err(bad()),
            (false, "") => RecordKind::Subject,
            (false, t) => {
                let n = t.strip_prefix('-').ok_or_else(bad)?;
                let (n, app) = match n.strip_suffix('A') {
                    Some(n) => (n, true),
                    None => (n, false),
                };
                let n: u32 = n.parse().ok().filter(|n: &u32| *n >= 1).ok_or_else(bad)?;
                if app {
                    RecordKind::App(n)
                } else {
                    RecordKind::Website(n)
                }
            }
        };
        Ok(Self {
            text: t.to_owned(),
            abbrev: abbrev.to_string(),
            kind,
        })
    }

    pub fn abbrev(&self) -> &str {
        &self.abbrev
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A GB/T 2260 province-level code (`110000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvinceCode(String);

impl ProvinceCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 6
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.ends_with("0000")
            && !s.starts_with('0')
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("{s:?} is not a GB/T 2260 province code (NN0000)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a region code (`110108`) lies inside this province.
    pub fn contains(&self, region: &str) -> bool {
        region.len() == 6 && region[..2] == self.0[..2]
    }
}

/// A mobile number: 11 digits starting with 1.
pub fn is_mobile(s: &str) -> bool {
    s.len() == 11 && s.starts_with('1') && s.bytes().all(|b| b.is_ascii_digit())
}

/// An office phone as the guides write it: `086-区号-号码` — `086`, an area code of 3–4 digits
/// starting with 0 (010, 0755), and a 7–8 digit local number that is not a mobile.
pub fn is_office_phone(s: &str) -> bool {
    let parts: Vec<&str> = s.trim().split('-').collect();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), [cc, area, local]
        if *cc == "086"
            && digits(area) && area.starts_with('0') && (3..=4).contains(&area.len())
            && digits(local) && (7..=8).contains(&local.len()) && !local.starts_with('0'))
}

/// An e-mail address of the interface's shape: `local@domain`, 6–128 characters, no spaces.
pub fn is_email(s: &str) -> bool {
    let n = s.chars().count();
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    (6..=128).contains(&n)
        && !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && DomainName::parse(domain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uscc_check_character() {
        // 91350100M000100Y43 is a published example with a correct check character.
        assert!(Uscc::parse("91350100M000100Y43").is_ok());
        assert!(matches!(
            Uscc::parse("91350100M000100Y44"),
            Err(UsccError::Check { expected: '3', .. })
        ));
        assert_eq!(Uscc::parse("91350100M000100YI3"), Err(UsccError::Format));
        assert_eq!(Uscc::parse("9135"), Err(UsccError::Format));
    }

    #[test]
    fn resident_id_check_date_and_case() {
        // 11010519491231002X: the example of GB 11643-1999.
        let id = ResidentId::parse("11010519491231002X").unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(
            ResidentId::parse("11010519491231002x"),
            Err(ResidentIdError::LowercaseX)
        );
        assert!(matches!(
            ResidentId::parse("110105194912310021"),
            Err(ResidentIdError::Check { expected: 'X', .. })
        ));
        assert!(matches!(
            ResidentId::parse("110105194902300021"),
            Err(ResidentIdError::Date(_))
        ));
        assert_eq!(
            ResidentId::parse("1101051949"),
            Err(ResidentIdError::Format)
        );
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(id.age_on(d(2026, 12, 30)), 76);
        assert_eq!(id.age_on(d(2026, 12, 31)), 77);
    }

    #[test]
    fn domains() {
        let d = DomainName::parse("Example.COM").unwrap();
        assert_eq!(d.ascii(), "example.com");
        assert!(d.has_suffix("com") && !d.has_suffix("cn"));
        let idn = DomainName::parse("示例.中国").unwrap();
        assert!(idn.has_suffix("中国") && idn.has_suffix("xn--fiqs8s"));
        assert!(DomainName::parse("localhost").is_err());
        assert!(DomainName::parse("-a.com").is_err());
        assert!(DomainName::parse("a_b.com").is_err());
        assert!(d.serves(&DomainName::parse("www.example.com").unwrap()));
        assert!(!d.serves(&DomainName::parse("shop.example.com").unwrap()));
    }

    #[test]
    fn record_numbers() {
        let r = RecordNumber::parse("京ICP备2026001234号-2A").unwrap();
        assert_eq!((r.abbrev(), r.kind()), ("京", RecordKind::App(2)));
        assert_eq!(
            RecordNumber::parse("沪ICP备2018000003号-1").unwrap().kind(),
            RecordKind::Website(1)
        );
        assert_eq!(
            RecordNumber::parse("京ICP证123456号").unwrap().kind(),
            RecordKind::Licence
        );
        for bad in [
            "ICP备123号",
            "京ICP备号",
            "京ICP备12a号",
            "京ICP备123号-",
            "京ICP备123号-0",
            "京ICP备123",
        ] {
            assert!(RecordNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_and_codes() {
        assert!(is_mobile("13800001234") && !is_mobile("23800001234") && !is_mobile("1380000123"));
        assert!(is_office_phone("086-010-62345678") && is_office_phone("086-0755-2612345"));
        assert!(!is_office_phone("010-62345678") && !is_office_phone("086-10-62345678"));
        assert!(!is_office_phone("086-010-13800001234"));
        assert!(is_email("ops@example.com") && !is_email("ops@") && !is_email("a b@example.com"));
        assert!(ProvinceCode::parse("110000").unwrap().contains("110108"));
        assert!(ProvinceCode::parse("110100").is_err());
    }
}
