//! Identities and ages: the subject's 统一社会信用代码 (GB 32100-2015), every resident ID
//! (GB 11643-1999, uppercase X), and the principals' ages at the review date — a unit's
//! principal at least 16, a personal filing's principal and every website's or app's
//! principal at least 18.

use chrono::NaiveDate;

use super::codes;
use crate::datafile::Finding;
use crate::domain::types::{ResidentId, ResidentIdError, Uscc, UsccError};
use crate::domain::{Filing, IdType, Nature, Principal, PrincipalRef};

pub(super) fn check(f: &Filing, review_date: NaiveDate, out: &mut Vec<Finding>) {
    let s = &f.subject;
    if let Some(n) = s.id_number.as_deref().filter(|n| !n.trim().is_empty()) {
        match s.id_type {
            Some(IdType::Uscc) => uscc(n, "subject.idNumber", out),
            Some(IdType::ResidentId) => {
                resident_id(n, "subject.idNumber", out);
            }
            _ => {}
        }
    }
    let content = super::sends_content(f.filing_type);
    let personal = s.nature == Some(Nature::Personal);
    if let Some(p) = s.principal.as_ref() {
        let id = principal_id(p, "subject.principal", out);
        if let (Some(id), true) = (id, content) {
            let (min, code) = if personal {
                (18, codes::PRINCIPAL_UNDER_18)
            } else {
                (16, codes::PRINCIPAL_UNDER_16)
            };
            age(
                &id,
                min,
                code,
                review_date,
                "subject.principal.idNumber",
                out,
            );
        }
    }
    let owners = f
        .websites
        .iter()
        .map(|w| ("websites", w.principal.as_ref()))
        .enumerate()
        .chain(
            f.apps
                .iter()
                .map(|a| ("apps", a.principal.as_ref()))
                .enumerate(),
        );
    for (i, (kind, r)) in owners {
        let path = format!("{kind}[{i}].principal");
        let id = match r {
            Some(PrincipalRef::Own(p)) => principal_id(p, &path, out),
            // The subject principal's ID was checked above; only the age differs.
            Some(PrincipalRef::SameAsSubject) => s
                .principal
                .as_ref()
                .filter(|p| p.id_type == Some(IdType::ResidentId))
                .and_then(|p| p.id_number.as_deref())
                .and_then(|n| ResidentId::parse(n).ok()),
            None => None,
        };
        if let (Some(id), true) = (id, content) {
            let field = format!("{path}.idNumber");
            age(&id, 18, codes::PRINCIPAL_UNDER_18, review_date, &field, out);
        }
    }
}

fn uscc(n: &str, field: &str, out: &mut Vec<Finding>) {
    match Uscc::parse(n) {
        Ok(_) => {}
        Err(e @ UsccError::Format) => {
            out.push(Finding::new(codes::USCC_FORMAT, field, e.to_string()))
        }
        Err(e @ UsccError::Check { .. }) => {
            out.push(Finding::new(codes::USCC_CHECK, field, e.to_string()))
        }
    }
}

/// The parsed ID, or its findings.
fn resident_id(n: &str, field: &str, out: &mut Vec<Finding>) -> Option<ResidentId> {
    match ResidentId::parse_all(n) {
        Ok(id) => Some(id),
        Err(errors) => {
            for e in errors {
                let code = match e {
                    ResidentIdError::Format => codes::RESIDENT_ID_FORMAT,
                    ResidentIdError::Date(_) => codes::RESIDENT_ID_DATE,
                    ResidentIdError::Check { .. } => codes::RESIDENT_ID_CHECK,
                    ResidentIdError::LowercaseX => codes::RESIDENT_ID_LOWERCASE_X,
                };
                out.push(Finding::new(code, field, e.to_string()));
            }
            None
        }
    }
}

fn principal_id(p: &Principal, path: &str, out: &mut Vec<Finding>) -> Option<ResidentId> {
    let n = p.id_number.as_deref().filter(|n| !n.trim().is_empty())?;
    if p.id_type != Some(IdType::ResidentId) {
        return None;
    }
    resident_id(n, &format!("{path}.idNumber"), out)
}

fn age(id: &ResidentId, min: i32, code: &str, on: NaiveDate, field: &str, out: &mut Vec<Finding>) {
    let years = id.age_on(on);
    if years < min {
        // The age, not the birth date: findings are logged and shown, and carry no PII.
        out.push(Finding::new(
            code,
            field,
            format!("the principal is {years} at the review date {on}; at least {min} is required"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::domain::Nature;

    /// A resident ID of someone born on `birth` (YYYYMMDD), with a correct check digit.
    fn rid(birth: &str) -> String {
        let body = format!("110105{birth}002");
        let w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        let sum: u32 = body
            .bytes()
            .zip(w)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        format!("{body}{}", char::from(b"10X98765432"[(sum % 11) as usize]))
    }

    #[test]
    fn uscc_check_character_is_verified() {
        let env = Env::new();
        let mut f = fixture("first.json");
        let mut n = f.subject.id_number.clone().unwrap();
        let last = n.pop().unwrap();
        n.push(if last == '0' { '1' } else { '0' });
        f.subject.id_number = Some(n);
        assert!(has(&env.check(&f), codes::USCC_CHECK, "subject.idNumber"));
        f.subject.id_number = Some("91110108MA01ABCDIO".into());
        assert!(has(&env.check(&f), codes::USCC_FORMAT, "subject.idNumber"));
    }

    #[test]
    fn resident_id_check_date_and_lowercase_x() {
        let env = Env::new();
        let mut f = fixture("first.json");
        let p = f.subject.principal.as_mut().unwrap();
        let mut n = p.id_number.clone().unwrap();
        let last = n.pop().unwrap();
        n.push(if last == '0' { '1' } else { '0' });
        p.id_number = Some(n);
        let field = "subject.principal.idNumber";
        assert!(has(&env.check(&f), codes::RESIDENT_ID_CHECK, field));
        f.subject.principal.as_mut().unwrap().id_number = Some("11010519491231002x".into());
        let found = env.check(&f);
        assert!(has(&found, codes::RESIDENT_ID_LOWERCASE_X, field));
        assert!(!has(&found, codes::RESIDENT_ID_CHECK, field), "{found:?}");
        f.subject.principal.as_mut().unwrap().id_number = Some(rid("19850230"));
        assert!(has(&env.check(&f), codes::RESIDENT_ID_DATE, field));
        f.subject.principal.as_mut().unwrap().id_number = Some("1101051985".into());
        assert!(has(&env.check(&f), codes::RESIDENT_ID_FORMAT, field));
    }

    #[test]
    fn unit_principal_at_least_16_personal_and_website_principals_18() {
        let env = Env::new();
        // Reviewed 2026-03-02.
        let mut f = fixture("first.json");
        f.subject.principal.as_mut().unwrap().id_number = Some(rid("20100303"));
        let found = env.check(&f);
        assert!(has(
            &found,
            codes::PRINCIPAL_UNDER_16,
            "subject.principal.idNumber"
        ));
        // 17 is old enough for a unit, not for a website (sameAsSubject).
        f.subject.principal.as_mut().unwrap().id_number = Some(rid("20090101"));
        let found = env.check(&f);
        assert!(!has(
            &found,
            codes::PRINCIPAL_UNDER_16,
            "subject.principal.idNumber"
        ));
        assert!(has(
            &found,
            codes::PRINCIPAL_UNDER_18,
            "websites[0].principal.idNumber"
        ));
        // A personal filing's principal at 17.
        f.subject.nature = Some(Nature::Personal);
        let found = env.check(&f);
        assert!(has(
            &found,
            codes::PRINCIPAL_UNDER_18,
            "subject.principal.idNumber"
        ));
        // The day before the 18th birthday and the day of it.
        f.subject.principal.as_mut().unwrap().id_number = Some(rid("20080303"));
        assert!(has(
            &env.check(&f),
            codes::PRINCIPAL_UNDER_18,
            "subject.principal.idNumber"
        ));
        f.subject.principal.as_mut().unwrap().id_number = Some(rid("20080302"));
        assert!(!has(
            &env.check(&f),
            codes::PRINCIPAL_UNDER_18,
            "subject.principal.idNumber"
        ));
    }
}
