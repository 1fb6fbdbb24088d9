//! The MCPServer's own `spec.hosts` and `spec.origins`, added as written (the guard's parser still checks them:
//! an entry it would refuse is skipped and reported).

use super::{DeriveInput, Fold};

pub fn contribute(input: &DeriveInput<'_>, fold: &mut Fold) {
    for h in &input.spec.hosts {
        fold.listed_host(h, "MCPServer spec.hosts");
    }
    for o in &input.spec.origins {
        fold.origins.add(o, "MCPServer spec.origins");
    }
}
