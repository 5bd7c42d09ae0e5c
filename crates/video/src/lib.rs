//! Video writers (in progress).
