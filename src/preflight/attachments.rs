//! Attachments: the kinds each filing must carry (a unit's licence, both sides of every new
//! principal's ID), and every file: it exists, is a JPEG by its magic bytes, is at most 2 MiB,
//! and can be brought within the bureau's 100/150 KB limits at a legible size
//! (`attachments::prepare_jpeg`, the same code the claim uses; the result is kept in the
//! context's `PreparedCache` so the claim does not re-encode it). The verification form is a
//! provincial rule (`provincial`).

use super::{Context, codes};
use crate::attachments::{AttachmentError, max_jpeg_bytes, prepare_jpeg};
use crate::datafile::Finding;
use crate::domain::{AttachmentKind, Filing, FilingType, Nature, Owner, PrincipalRef};

pub(super) fn check(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    required_kinds(f, out);
    files(f, ctx, out);
}

/// Whether `f` carries an attachment of `kind` owned by `owner`.
pub(super) fn carries(f: &Filing, kind: AttachmentKind, owner: Owner) -> bool {
    f.attachments
        .iter()
        .any(|a| a.kind == Some(kind) && a.owner == Some(owner))
}

pub(super) fn require(
    f: &Filing,
    kind: AttachmentKind,
    owner: Owner,
    code: &str,
    what: &str,
    out: &mut Vec<Finding>,
) {
    if !carries(f, kind, owner) {
        out.push(Finding::new(
            code,
            "attachments",
            format!("{what} ({kind:?} owned by {owner}) is required"),
        ));
    }
}

/// Whether the filing creates a new subject (XZBA).
fn new_subject(f: &Filing) -> bool {
    f.filing_type == FilingType::First
        || (f.filing_type == FilingType::App && f.subject.record_number.is_none())
}

/// Whether the filing's websites / apps are new records with their own principals.
fn new_sites(f: &Filing) -> bool {
    matches!(
        f.filing_type,
        FilingType::First | FilingType::AddSite | FilingType::App
    )
}

fn required_kinds(f: &Filing, out: &mut Vec<Finding>) {
    let code = codes::ATTACHMENT_REQUIRED;
    if new_subject(f) {
        if f.subject.nature != Some(Nature::Personal) {
            require(
                f,
                AttachmentKind::License,
                Owner::Subject,
                code,
                "the unit's licence",
                out,
            );
        }
        for kind in [AttachmentKind::IdFront, AttachmentKind::IdBack] {
            require(f, kind, Owner::Subject, code, "the principal's ID", out);
        }
    }
    if new_sites(f) {
        let owners = f
            .websites
            .iter()
            .enumerate()
            .map(|(i, w)| (Owner::Website(i), w.principal.as_ref()))
            .chain(
                f.apps
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (Owner::App(i), a.principal.as_ref())),
            );
        for (owner, principal) in owners {
            if matches!(principal, Some(PrincipalRef::Own(_))) {
                for kind in [AttachmentKind::IdFront, AttachmentKind::IdBack] {
                    require(f, kind, owner, code, "the website principal's ID", out);
                }
            }
        }
    }
}

fn files(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for (j, a) in f.attachments.iter().enumerate() {
        let field = format!("attachments[{j}].path");
        let Some(path) = a.path.as_deref().map(str::trim).filter(|p| !p.is_empty()) else {
            out.push(Finding::new(
                codes::ATTACHMENT_MISSING,
                field,
                "no file is named",
            ));
            continue;
        };
        if std::path::Path::new(path)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            out.push(Finding::new(
                codes::ATTACHMENT_MISSING,
                field,
                "the path must be relative to the attachments directory, without ..",
            ));
            continue;
        }
        let bytes = match std::fs::read(ctx.attachments_dir.join(path)) {
            Ok(b) => b,
            Err(e) => {
                out.push(Finding::new(
                    codes::ATTACHMENT_MISSING,
                    field,
                    format!("cannot read the file: {e}"),
                ));
                continue;
            }
        };
        let limit = max_jpeg_bytes(a.kind.unwrap_or(AttachmentKind::Other));
        let prepared = match ctx.prepared {
            Some(cache) => cache.prepare(&bytes, limit, ctx.min_width, ctx.min_height),
            None => prepare_jpeg(&bytes, limit, ctx.min_width, ctx.min_height),
        };
        if let Err(e) = prepared {
            let code = match e {
                AttachmentError::NotJpeg => codes::ATTACHMENT_NOT_JPEG,
                AttachmentError::TooLarge { .. } => codes::ATTACHMENT_TOO_LARGE,
                _ => codes::ATTACHMENT_UNUSABLE,
            };
            out.push(Finding::new(code, field, e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::domain::Attachment;

    #[test]
    fn required_kinds_per_nature_and_principal() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.attachments.retain(|a| {
            a.kind != Some(AttachmentKind::License) && a.kind != Some(AttachmentKind::IdBack)
        });
        let found = env.check(&f);
        let msgs: Vec<&str> = found
            .iter()
            .filter(|x| x.code == codes::ATTACHMENT_REQUIRED)
            .map(|x| x.message.as_str())
            .collect();
        assert_eq!(msgs.len(), 2, "{found:?}");
        // A personal subject has no licence to show.
        f.subject.nature = Some(Nature::Personal);
        let n = env
            .check(&f)
            .iter()
            .filter(|x| x.code == codes::ATTACHMENT_REQUIRED)
            .count();
        assert_eq!(n, 1);
        // A website with its own principal needs that principal's ID.
        let mut g = fixture("add-site.json");
        let p = g.subject.principal.clone().unwrap();
        g.websites[0].principal = Some(PrincipalRef::Own(p));
        let found = env.check(&g);
        assert_eq!(
            found
                .iter()
                .filter(|x| x.code == codes::ATTACHMENT_REQUIRED)
                .count(),
            2,
            "{found:?}"
        );
    }

    #[test]
    fn files_exist_are_jpeg_and_fit() {
        let env = Env::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.png"), b"\x89PNG\r\n\x1a\n....").unwrap();
        let mut big = vec![0xFF, 0xD8, 0xFF, 0xE0];
        big.resize(2 * 1024 * 1024 + 1, 0);
        std::fs::write(dir.path().join("big.jpg"), &big).unwrap();
        let mut tiny = vec![0xFF, 0xD8, 0xFF, 0xE0];
        tiny.resize(200 * 1024, 7); // over the limit and not decodable
        std::fs::write(dir.path().join("junk.jpg"), &tiny).unwrap();
        let mut f = fixture("change-access.json");
        for p in ["none.jpg", "x.png", "big.jpg", "junk.jpg", "../etc/passwd"] {
            f.attachments.push(Attachment {
                kind: Some(AttachmentKind::Other),
                owner: Some(Owner::Subject),
                path: Some(p.into()),
            });
        }
        let ctx = Context {
            attachments_dir: dir.path(),
            ..env.ctx("110000")
        };
        let found = super::super::check(&f, &ctx);
        assert!(
            has(&found, codes::ATTACHMENT_MISSING, "attachments[0].path"),
            "{found:?}"
        );
        assert!(has(
            &found,
            codes::ATTACHMENT_NOT_JPEG,
            "attachments[1].path"
        ));
        assert!(has(
            &found,
            codes::ATTACHMENT_TOO_LARGE,
            "attachments[2].path"
        ));
        assert!(has(
            &found,
            codes::ATTACHMENT_UNUSABLE,
            "attachments[3].path"
        ));
        assert!(has(
            &found,
            codes::ATTACHMENT_MISSING,
            "attachments[4].path"
        ));
    }
}
