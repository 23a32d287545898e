//! imatrix
