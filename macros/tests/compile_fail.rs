//! A bad spec is a compile error at the `model!` call, carrying the spec's file:line:column.

#[test]
fn macro_spec_errors_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
