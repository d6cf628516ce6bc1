//! Whose container is this? [`Deployment`]: the human deployment name and the
//! database's deployment identity (read once from `highway.settings`), and
//! [`Deployment::ownership`], the one judgement every path that may stop or remove a
//! container makes first (the collector, a retry's cleanup of older attempts, adoption
//! on a name conflict, `gc --dry-run`).
//!
//! A container is ours only when it carries both our name and our identity. Two stacks
//! that share a Docker daemon with the same `--deployment` name but separate databases
//! see each other's containers as foreign and never touch them. Containers made before
//! identities existed carry the name alone: left alone unless the operator adopts them
//! (`--adopt-unlabelled-containers`).

use crate::db::settings;
use crate::docker::spec::labels;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// How a labelled container relates to this deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Our name and our database's identity (or unlabelled and adopted).
    Ours,
    /// Our name but no identity label, and adoption is off.
    Unlabelled,
    /// Another database's identity, or another deployment name.
    Foreign,
}

/// This process's deployment: cheap to clone; the identity is read on first use.
#[derive(Debug, Clone)]
pub struct Deployment {
    name: String,
    adopt_unlabelled: bool,
    id: Arc<OnceCell<Uuid>>,
}

impl Deployment {
    pub fn new(name: impl Into<String>, adopt_unlabelled: bool) -> Self {
        Self {
            name: name.into(),
            adopt_unlabelled,
            id: Arc::new(OnceCell::new()),
        }
    }

    /// A deployment whose identity is already known (tests, benches).
    pub fn with_id(name: impl Into<String>, id: Uuid) -> Self {
        Self {
            name: name.into(),
            adopt_unlabelled: false,
            id: Arc::new(OnceCell::new_with(Some(id))),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn adopts_unlabelled(&self) -> bool {
        self.adopt_unlabelled
    }

    /// The database's identity. Read once per process: it never changes after the
    /// migration that created it.
    pub async fn id(&self, pool: &PgPool) -> Result<Uuid, settings::Error> {
        self.id
            .get_or_try_init(|| settings::deployment_id(pool))
            .await
            .copied()
    }

    /// Judges a container's labels against our name and identity `id`.
    pub fn ownership(&self, id: Uuid, l: &HashMap<String, String>) -> Ownership {
        if l.get(labels::MANAGED).map(String::as_str) != Some("true")
            || l.get(labels::DEPLOYMENT).map(String::as_str) != Some(self.name.as_str())
        {
            return Ownership::Foreign;
        }
        match l.get(labels::DEPLOYMENT_ID) {
            Some(v) if v.parse::<Uuid>().ok() == Some(id) => Ownership::Ours,
            Some(_) => Ownership::Foreign,
            None if self.adopt_unlabelled => Ownership::Ours,
            None => Ownership::Unlabelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ownership_needs_name_and_identity() {
        let id = Uuid::now_v7();
        let other = Uuid::now_v7();
        let d = Deployment::with_id("default", id);
        let ours = l(&[
            ("highway.managed", "true"),
            ("highway.deployment", "default"),
            ("highway.deployment_id", &id.to_string()),
        ]);
        assert_eq!(d.ownership(id, &ours), Ownership::Ours);
        // Same name, another database: foreign (two stacks on one daemon).
        let theirs = l(&[
            ("highway.managed", "true"),
            ("highway.deployment", "default"),
            ("highway.deployment_id", &other.to_string()),
        ]);
        assert_eq!(d.ownership(id, &theirs), Ownership::Foreign);
        // Our database, another deployment name: that deployment's collector judges it.
        let named = l(&[
            ("highway.managed", "true"),
            ("highway.deployment", "staging"),
            ("highway.deployment_id", &id.to_string()),
        ]);
        assert_eq!(d.ownership(id, &named), Ownership::Foreign);
        // Not managed at all.
        assert_eq!(
            d.ownership(id, &l(&[("highway.deployment_id", &id.to_string())])),
            Ownership::Foreign
        );
        // Made before identities: left alone unless adopted.
        let old = l(&[
            ("highway.managed", "true"),
            ("highway.deployment", "default"),
        ]);
        assert_eq!(d.ownership(id, &old), Ownership::Unlabelled);
        let adopting = Deployment {
            adopt_unlabelled: true,
            ..d.clone()
        };
        assert_eq!(adopting.ownership(id, &old), Ownership::Ours);
        // Adoption never extends to another identity.
        assert_eq!(adopting.ownership(id, &theirs), Ownership::Foreign);
        // A malformed identity is not ours.
        let bad = l(&[
            ("highway.managed", "true"),
            ("highway.deployment", "default"),
            ("highway.deployment_id", "nope"),
        ]);
        assert_eq!(adopting.ownership(id, &bad), Ownership::Foreign);
    }
}
