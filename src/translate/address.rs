//! See the module list in `translate`.
