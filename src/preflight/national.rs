//! National rules: the province and region, phone and e-mail shapes, domains and home URLs,
//! remarks and pre-approval numbers, the legal-representative remark for financial names, and
//! record numbers.

use std::collections::HashMap;

use super::{Context, codes};
use crate::datafile::Finding;
use crate::domain::types::{
    DomainName, ProvinceCode, RecordKind, RecordNumber, is_email, is_mobile, is_office_phone,
};
use crate::domain::{Filing, FilingType, Nature, Principal, PrincipalRef, ServiceContent};

/// Words in a subject name that make the bureau ask whether the principal is the legal
/// representative (投资管理, 担保, 典当, 贷款, 理财).
pub const FINANCIAL_WORDS: [&str; 5] = ["投资管理", "担保", "典当", "贷款", "理财"];
/// What the subject remark must say for those names.
pub const LEGAL_REPRESENTATIVE: &str = "法定代表人";

pub(super) fn check(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    province(f, ctx, out);
    region(f, ctx, out);
    contacts(f, out);
    if super::sends_content(f.filing_type) {
        domains(f, ctx, out);
        remarks(f, out);
        legal_representative(f, out);
    }
    record_numbers(f, ctx, out);
}

fn province(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    if ProvinceCode::parse(&f.province).is_err() || ctx.province.is_none() {
        out.push(Finding::new(
            codes::PROVINCE_UNKNOWN,
            "province",
            format!("{:?} is not one of the 31 provincial bureaus", f.province),
        ));
    }
}

fn region(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let Some(r) = f
        .subject
        .region
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    else {
        return;
    };
    let level = ctx.codes.region(r).and_then(|e| e.get("Lx"));
    if !matches!(level, Some("2" | "3")) {
        out.push(Finding::new(
            codes::REGION_UNKNOWN,
            "subject.region",
            format!("{r:?} is not a prefecture- or county-level GB/T 2260 code the bureau knows"),
        ));
        return;
    }
    if let Ok(p) = ProvinceCode::parse(&f.province)
        && !p.contains(r)
    {
        out.push(Finding::new(
            codes::REGION_OUTSIDE_PROVINCE,
            "subject.region",
            format!("{r} is outside the filing's province {}", p.as_str()),
        ));
    }
}

/// Every principal the document spells out, with its path.
pub(super) fn principals(f: &Filing) -> Vec<(String, &Principal)> {
    let mut out = Vec::new();
    if let Some(p) = f.subject.principal.as_ref() {
        out.push(("subject.principal".to_owned(), p));
    }
    for (i, w) in f.websites.iter().enumerate() {
        if let Some(PrincipalRef::Own(p)) = w.principal.as_ref() {
            out.push((format!("websites[{i}].principal"), p));
        }
    }
    for (i, a) in f.apps.iter().enumerate() {
        if let Some(PrincipalRef::Own(p)) = a.principal.as_ref() {
            out.push((format!("apps[{i}].principal"), p));
        }
    }
    out
}

fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

fn contacts(f: &Filing, out: &mut Vec<Finding>) {
    for (path, p) in principals(f) {
        if let Some(m) = present(p.mobile.as_deref())
            && !is_mobile(m)
        {
            out.push(Finding::new(
                codes::MOBILE_FORMAT,
                format!("{path}.mobile"),
                "a mobile number is 11 digits starting with 1",
            ));
        }
        if let Some(o) = present(p.office_phone.as_deref())
            && !is_office_phone(o)
        {
            out.push(Finding::new(
                codes::OFFICE_PHONE_FORMAT,
                format!("{path}.officePhone"),
                "an office phone is written 086-区号-号码 (086-010-12345678)",
            ));
        }
        if let Some(e) = present(p.email.as_deref())
            && !is_email(e)
        {
            out.push(Finding::new(
                codes::EMAIL_FORMAT,
                format!("{path}.email"),
                "not an e-mail address (local@domain, 6–128 characters)",
            ));
        }
    }
}

/// The host of a home URL (`www.example.com/index.html`, `https://example.com:8443/`).
fn url_host(url: &str) -> &str {
    let u = url.trim();
    let u = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .unwrap_or(u);
    let end = u.find(['/', ':', '?', '#']).unwrap_or(u.len());
    &u[..end]
}

fn domains(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, w) in f.websites.iter().enumerate() {
        let path = format!("websites[{i}]");
        if w.domains.len() != 1 {
            out.push(Finding::new(
                codes::DOMAIN_COUNT,
                format!("{path}.domains"),
                format!(
                    "a website carries exactly one domain (since 2019), found {}; file another as a second website",
                    w.domains.len()
                ),
            ));
        }
        let mut parsed = Vec::new();
        for (k, d) in w.domains.iter().enumerate() {
            let field = format!("{path}.domains[{k}]");
            let name = match DomainName::parse(d) {
                Ok(n) => n,
                Err(e) => {
                    out.push(Finding::new(codes::DOMAIN_SYNTAX, field, e));
                    continue;
                }
            };
            if !ctx.allowed_suffixes.iter().any(|s| name.has_suffix(s)) {
                out.push(Finding::new(
                    codes::DOMAIN_SUFFIX_NOT_ALLOWED,
                    &field,
                    format!(
                        "{} is not under a top-level domain the MIIT approved",
                        name.ascii()
                    ),
                ));
            }
            if let Some(first) = seen.insert(name.ascii().to_owned(), i)
                && first != i
            {
                out.push(Finding::new(
                    codes::DOMAIN_DUPLICATE,
                    &field,
                    format!("{} is also the domain of websites[{first}]", name.ascii()),
                ));
            }
            parsed.push(name);
        }
        if w.home_urls.len() > 1 {
            out.push(Finding::new(
                codes::HOME_URL_COUNT,
                format!("{path}.homeUrls"),
                "a website has one home URL (the data file holds one)",
            ));
        }
        for (j, url) in w.home_urls.iter().enumerate() {
            let field = format!("{path}.homeUrls[{j}]");
            let own = DomainName::parse(url_host(url))
                .is_ok_and(|host| parsed.iter().any(|d| d.serves(&host)));
            if !own && !parsed.is_empty() {
                out.push(Finding::new(
                    codes::HOME_URL_NOT_OWN_DOMAIN,
                    field,
                    "a home URL must be on the website's domain (optionally with www. in front)",
                ));
            }
        }
    }
}

fn remarks(f: &Filing, out: &mut Vec<Finding>) {
    let personal = f.subject.nature == Some(Nature::Personal);
    for (i, w) in f.websites.iter().enumerate() {
        let needs = personal || w.service_content == Some(ServiceContent::Other);
        if needs && present(w.remark.as_deref()).is_none() {
            out.push(Finding::new(
                codes::REMARK_REQUIRED,
                format!("websites[{i}].remark"),
                if personal {
                    "a personal website needs a remark describing its content"
                } else {
                    "service content OTHER needs a remark describing the content"
                },
            ));
        }
        for (k, pa) in w.pre_approvals.iter().enumerate() {
            if pa.kind.is_some() && present(pa.number.as_deref()).is_none() {
                out.push(Finding::new(
                    codes::PRE_APPROVAL_NUMBER_REQUIRED,
                    format!("websites[{i}].preApprovals[{k}].number"),
                    "a pre-approved content kind needs its approval number (前置审批号)",
                ));
            }
        }
    }
}

fn legal_representative(f: &Filing, out: &mut Vec<Finding>) {
    let Some(name) = f.subject.name.as_deref() else {
        return;
    };
    let Some(word) = FINANCIAL_WORDS.iter().find(|w| name.contains(*w)) else {
        return;
    };
    let said = f
        .subject
        .remark
        .as_deref()
        .is_some_and(|r| r.contains(LEGAL_REPRESENTATIVE));
    if !said {
        out.push(Finding::new(
            codes::LEGAL_REPRESENTATIVE_REMARK,
            "subject.remark",
            format!(
                "a subject whose name contains {word} must have its legal representative as principal; the remark must say so (法定代表人)"
            ),
        ));
    }
}

/// Which record numbers a type must carry: (subject, every website).
fn required_numbers(t: FilingType) -> (bool, bool) {
    match t {
        FilingType::First | FilingType::App => (false, false),
        FilingType::AddSite | FilingType::CancelSubject => (true, false),
        FilingType::AddAccess
        | FilingType::ChangeSubject
        | FilingType::ChangeSite
        | FilingType::ChangeAccess
        | FilingType::CancelSite
        | FilingType::CancelAccess => (true, true),
    }
}

fn record_numbers(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let (subject_required, sites_required) = required_numbers(f.filing_type);
    let abbrev = ctx
        .codes
        .province_abbrev(&f.province)
        .or(ctx.province.map(|p| p.abbrev.as_str()));
    let mut one = |value: Option<&str>, field: String, required: bool, kinds: &[&str]| {
        let Some(v) = present(value) else {
            if required {
                out.push(Finding::new(
                    codes::RECORD_NUMBER_REQUIRED,
                    field,
                    format!(
                        "a {} filing quotes this record number",
                        f.filing_type.as_str()
                    ),
                ));
            }
            return;
        };
        let n = match RecordNumber::parse(v) {
            Ok(n) => n,
            Err(e) => {
                out.push(Finding::new(codes::RECORD_NUMBER_FORMAT, field, e));
                return;
            }
        };
        let kind = match n.kind() {
            RecordKind::Subject | RecordKind::Licence => "subject",
            RecordKind::Website(_) => "website",
            RecordKind::App(_) => "app",
        };
        if !kinds.contains(&kind) {
            out.push(Finding::new(
                codes::RECORD_NUMBER_FORMAT,
                &field,
                format!("{v} numbers a {kind}, expected a {}", kinds.join(" or ")),
            ));
        }
        if let Some(a) = abbrev
            && n.abbrev() != a
        {
            out.push(Finding::new(
                codes::RECORD_NUMBER_PROVINCE,
                field,
                format!("{v} is not a record of this province ({a})"),
            ));
        }
    };
    one(
        f.subject.record_number.as_deref(),
        "subject.recordNumber".into(),
        subject_required,
        &["subject"],
    );
    for (i, w) in f.websites.iter().enumerate() {
        one(
            w.record_number.as_deref(),
            format!("websites[{i}].recordNumber"),
            sites_required,
            &["website"],
        );
    }
    for (i, a) in f.apps.iter().enumerate() {
        one(
            a.record_number.as_deref(),
            format!("apps[{i}].recordNumber"),
            false,
            &["app"],
        );
    }
    if f.filing_type.is_cancel() && f.cancels.is_empty() {
        one(None, "cancels".into(), true, &[]);
    }
    let cancel_kinds: &[&str] = match f.filing_type {
        FilingType::CancelSubject => &["subject"],
        _ => &["website"],
    };
    for (k, c) in f.cancels.iter().enumerate() {
        one(Some(c), format!("cancels[{k}]"), true, cancel_kinds);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::domain::PreApproval;

    #[test]
    fn unknown_province_and_region_outside_it() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.subject.region = Some("310115".into());
        assert!(has(
            &env.check(&f),
            codes::REGION_OUTSIDE_PROVINCE,
            "subject.region"
        ));
        f.subject.region = Some("119999".into());
        assert!(has(&env.check(&f), codes::REGION_UNKNOWN, "subject.region"));
        f.subject.region = Some("110000".into()); // province level: not a Txdz region
        assert!(has(&env.check(&f), codes::REGION_UNKNOWN, "subject.region"));
        f.province = "990000".into();
        assert!(has(&env.check(&f), codes::PROVINCE_UNKNOWN, "province"));
    }

    #[test]
    fn phones_and_email() {
        let env = Env::new();
        let mut f = fixture("first.json");
        let p = f.subject.principal.as_mut().unwrap();
        p.mobile = Some("2380000123".into());
        p.office_phone = Some("010-62345678".into());
        p.email = Some("not-an-email".into());
        let found = env.check(&f);
        assert!(has(
            &found,
            codes::MOBILE_FORMAT,
            "subject.principal.mobile"
        ));
        assert!(has(
            &found,
            codes::OFFICE_PHONE_FORMAT,
            "subject.principal.officePhone"
        ));
        assert!(has(&found, codes::EMAIL_FORMAT, "subject.principal.email"));
    }

    #[test]
    fn domain_rules() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.websites[0].domains = vec!["bad_domain.com".into()];
        assert!(has(
            &env.check(&f),
            codes::DOMAIN_SYNTAX,
            "websites[0].domains[0]"
        ));
        for refused in [
            "example.hk",
            "example.tw",
            "example.asia",
            "example.jp",
            "example.biz",
        ] {
            f.websites[0].domains = vec![refused.into()];
            f.websites[0].home_urls = vec![format!("www.{refused}")];
            let found = env.check(&f);
            assert!(
                has(
                    &found,
                    codes::DOMAIN_SUFFIX_NOT_ALLOWED,
                    "websites[0].domains[0]"
                ),
                "{refused}: {found:?}"
            );
        }
        // IDN under an approved IDN suffix.
        f.websites[0].domains = vec!["示例.中国".into()];
        f.websites[0].home_urls = vec!["www.示例.中国".into()];
        assert_eq!(pairs(&env.check(&f)), vec![]);
        f.websites[0].domains = vec!["a.com".into(), "b.com".into()];
        f.websites[0].home_urls = vec!["a.com".into(), "www.b.com".into(), "c.com".into()];
        let found = env.check(&f);
        assert!(has(&found, codes::DOMAIN_COUNT, "websites[0].domains"));
        assert!(has(&found, codes::HOME_URL_COUNT, "websites[0].homeUrls"));
        assert!(has(
            &found,
            codes::HOME_URL_NOT_OWN_DOMAIN,
            "websites[0].homeUrls[2]"
        ));
        assert!(!has(
            &found,
            codes::HOME_URL_NOT_OWN_DOMAIN,
            "websites[0].homeUrls[1]"
        ));
        let mut g = fixture("change-subject.json");
        g.websites[1].domains = g.websites[0].domains.clone();
        g.websites[1].home_urls = g.websites[0].home_urls.clone();
        assert!(has(
            &env.check(&g),
            codes::DOMAIN_DUPLICATE,
            "websites[1].domains[0]"
        ));
        assert_eq!(url_host("https://www.a.com:8443/x?y"), "www.a.com");
    }

    #[test]
    fn remarks_and_pre_approval_numbers() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.websites[0].service_content = Some(ServiceContent::Other);
        assert!(has(
            &env.check(&f),
            codes::REMARK_REQUIRED,
            "websites[0].remark"
        ));
        f.websites[0].remark = Some("企业产品介绍".into());
        assert!(!has(
            &env.check(&f),
            codes::REMARK_REQUIRED,
            "websites[0].remark"
        ));
        f.websites[0].remark = None;
        f.websites[0].service_content = Some(ServiceContent::Blog);
        f.subject.nature = Some(Nature::Personal);
        assert!(has(
            &env.check(&f),
            codes::REMARK_REQUIRED,
            "websites[0].remark"
        ));
        let mut g = fixture("first.json");
        g.websites[0].pre_approvals = vec![PreApproval {
            kind: Some(crate::domain::PreApprovalKind::News),
            number: None,
            attachment: None,
        }];
        assert!(has(
            &env.check(&g),
            codes::PRE_APPROVAL_NUMBER_REQUIRED,
            "websites[0].preApprovals[0].number"
        ));
    }

    #[test]
    fn financial_names_need_the_legal_representative_remark() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.subject.name = Some("北京示例投资管理有限公司".into());
        assert!(has(
            &env.check(&f),
            codes::LEGAL_REPRESENTATIVE_REMARK,
            "subject.remark"
        ));
        f.subject.remark = Some("负责人为法定代表人".into());
        assert!(!has(
            &env.check(&f),
            codes::LEGAL_REPRESENTATIVE_REMARK,
            "subject.remark"
        ));
    }

    #[test]
    fn record_numbers_required_well_formed_and_of_the_province() {
        let env = Env::new();
        let mut f = fixture("add-access.json");
        f.websites[0].record_number = None;
        assert!(has(
            &env.check(&f),
            codes::RECORD_NUMBER_REQUIRED,
            "websites[0].recordNumber"
        ));
        f.websites[0].record_number = Some("京ICP备2019000002".into());
        assert!(has(
            &env.check(&f),
            codes::RECORD_NUMBER_FORMAT,
            "websites[0].recordNumber"
        ));
        f.websites[0].record_number = Some("沪ICP备2019000002号-1".into());
        assert!(has(
            &env.check(&f),
            codes::RECORD_NUMBER_PROVINCE,
            "websites[0].recordNumber"
        ));
        f.websites[0].record_number = Some("京ICP备2019000002号".into()); // a subject's
        assert!(has(
            &env.check(&f),
            codes::RECORD_NUMBER_FORMAT,
            "websites[0].recordNumber"
        ));
        let mut g = fixture("cancel-site.json");
        g.cancels.clear();
        assert!(has(
            &env.check(&g),
            codes::RECORD_NUMBER_REQUIRED,
            "cancels"
        ));
    }
}
