//! dsv3c-runtime: runs a Program — on the CPU through the reference implementation of every
//! op, or on a GPU through cudarc (see `shared/DESIGN.md`). Built by the reference-model issue
//! onwards; nothing here yet.
