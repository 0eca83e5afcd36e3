//! The adapter to openraft (see the module docs of [`super`]). Written by the Raft adapter
//! work; nothing outside this module names an openraft type except through what it exports.
