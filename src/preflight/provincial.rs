//! Each bureau's extra rules, as provinces.toml gives them (`provinces::ProvinceRule`): one
//! function per rule kind. A new kind is code here and a variant there; a new rule of a known
//! kind for a province is an edit of provinces.toml only.

use super::attachments::require;
use super::{Context, codes};
use crate::datafile::Finding;
use crate::domain::types::{DomainName, is_office_phone};
use crate::domain::{AttachmentKind, Filing, FilingType, Nature, Owner};
use crate::provinces::ProvinceRule;

pub(super) fn check(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let Some(province) = ctx.province else {
        return;
    };
    if !super::sends_content(f.filing_type) {
        return;
    }
    for rule in &province.rules {
        match rule {
            ProvinceRule::RefuseSuffixes { suffixes, reason } => {
                refuse_suffixes(f, suffixes, reason.as_deref(), &province.name, out)
            }
            ProvinceRule::RequireLandlineForPersonal => landline(f, &province.name, out),
            ProvinceRule::RequireVerificationForm => verification_form(f, &province.name, out),
            ProvinceRule::ServerLocations { locations } => {
                server_locations(f, locations, &province.name, out)
            }
        }
    }
}

fn refuse_suffixes(
    f: &Filing,
    suffixes: &[String],
    reason: Option<&str>,
    name: &str,
    out: &mut Vec<Finding>,
) {
    for (i, w) in f.websites.iter().enumerate() {
        for (k, d) in w.domains.iter().enumerate() {
            let Ok(domain) = DomainName::parse(d) else {
                continue; // DOMAIN_SYNTAX already says so
            };
            if let Some(s) = suffixes.iter().find(|s| domain.has_suffix(s)) {
                out.push(Finding::new(
                    codes::DOMAIN_SUFFIX_REFUSED_BY_PROVINCE,
                    format!("websites[{i}].domains[{k}]"),
                    reason.map_or_else(
                        || format!("{name} does not accept domains under .{s}"),
                        |r| format!("{r} (.{s})"),
                    ),
                ));
            }
        }
    }
}

fn landline(f: &Filing, name: &str, out: &mut Vec<Finding>) {
    if f.subject.nature != Some(Nature::Personal) {
        return;
    }
    let phone = f
        .subject
        .principal
        .as_ref()
        .and_then(|p| p.office_phone.as_deref())
        .map(str::trim)
        .filter(|p| !p.is_empty());
    // A malformed one is OFFICE_PHONE_FORMAT already.
    if phone.is_none_or(|p| !is_office_phone(p) && p.starts_with('1')) {
        out.push(Finding::new(
            codes::LANDLINE_REQUIRED,
            "subject.principal.officePhone",
            format!(
                "{name} requires a personal filing's principal to give a landline (086-区号-号码)"
            ),
        ));
    }
}

/// Types whose websites, apps or accesses are new to the bureau (they carry a 核验单).
fn files_new_access(t: FilingType) -> bool {
    matches!(
        t,
        FilingType::First | FilingType::AddSite | FilingType::AddAccess | FilingType::App
    )
}

fn verification_form(f: &Filing, name: &str, out: &mut Vec<Finding>) {
    if !files_new_access(f.filing_type) {
        return;
    }
    let what = format!("{name} requires the verification form (网站备案信息真实性核验单)");
    for i in 0..f.websites.len() {
        require(
            f,
            AttachmentKind::VerificationForm,
            Owner::Website(i),
            codes::VERIFICATION_FORM_REQUIRED,
            &what,
            out,
        );
    }
    for i in 0..f.apps.len() {
        require(
            f,
            AttachmentKind::VerificationForm,
            Owner::App(i),
            codes::VERIFICATION_FORM_REQUIRED,
            &what,
            out,
        );
    }
}

fn server_locations(f: &Filing, locations: &[String], name: &str, out: &mut Vec<Finding>) {
    let accesses = f
        .websites
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("websites[{i}]"), w.access.as_ref()))
        .chain(
            f.apps
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("apps[{i}]"), a.access.as_ref())),
        );
    for (path, access) in accesses {
        let Some(loc) = access.and_then(|a| a.location.as_deref()) else {
            continue;
        };
        if !locations.iter().any(|l| l == loc) {
            out.push(Finding::new(
                codes::SERVER_LOCATION_NOT_ALLOWED,
                format!("{path}.access.location"),
                format!(
                    "{loc} is not one of the provider's server locations for {name} ({})",
                    locations.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::domain::Attachment;

    #[test]
    fn beijing_refuses_foreign_cctlds_shanghai_does_not() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.websites[0].domains = vec!["example.cc".into()];
        f.websites[0].home_urls = vec!["www.example.cc".into()];
        let found = env.check(&f);
        assert!(has(
            &found,
            codes::DOMAIN_SUFFIX_REFUSED_BY_PROVINCE,
            "websites[0].domains[0]"
        ));
        assert!(!has(
            &found,
            codes::DOMAIN_SUFFIX_NOT_ALLOWED,
            "websites[0].domains[0]"
        ));
        let found = super::super::check(&f, &env.ctx("310000"));
        assert!(!has(
            &found,
            codes::DOMAIN_SUFFIX_REFUSED_BY_PROVINCE,
            "websites[0].domains[0]"
        ));
    }

    #[test]
    fn tianjin_personal_filings_need_a_landline() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.province = "120000".into();
        f.subject.region = Some("120101".into());
        f.subject.nature = Some(Nature::Personal);
        f.subject.principal.as_mut().unwrap().office_phone = None;
        f.websites[0].access.as_mut().unwrap().location = Some("120000".into());
        let field = "subject.principal.officePhone";
        assert!(has(&env.check(&f), codes::LANDLINE_REQUIRED, field));
        f.subject.principal.as_mut().unwrap().office_phone = Some("086-022-23456789".into());
        assert!(!has(&env.check(&f), codes::LANDLINE_REQUIRED, field));
        // Beijing has no such rule.
        f.subject.principal.as_mut().unwrap().office_phone = None;
        assert!(!has(
            &super::super::check(&f, &env.ctx("110000")),
            codes::LANDLINE_REQUIRED,
            field
        ));
    }

    #[test]
    fn guangdong_wants_the_verification_form() {
        let env = Env::new();
        let mut f = fixture("app.json");
        assert_eq!(pairs(&env.check(&f)), vec![]);
        f.attachments
            .retain(|a: &Attachment| a.kind != Some(AttachmentKind::VerificationForm));
        assert!(has(
            &env.check(&f),
            codes::VERIFICATION_FORM_REQUIRED,
            "attachments"
        ));
        assert!(!has(
            &super::super::check(&f, &env.ctx("310000")),
            codes::VERIFICATION_FORM_REQUIRED,
            "attachments"
        ));
    }

    #[test]
    fn server_location_must_be_the_providers() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.websites[0].access.as_mut().unwrap().location = Some("440000".into());
        assert!(has(
            &env.check(&f),
            codes::SERVER_LOCATION_NOT_ALLOWED,
            "websites[0].access.location"
        ));
        f.websites[0].access.as_mut().unwrap().location = Some("130000".into());
        assert!(!has(
            &env.check(&f),
            codes::SERVER_LOCATION_NOT_ALLOWED,
            "websites[0].access.location"
        ));
    }
}
