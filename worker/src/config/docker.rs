//! Docker settings and the operator's security policy (owned by the docker spec work).
