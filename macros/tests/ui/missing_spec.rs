mod missing {
    dsv3c_macros::model!("no_such_spec.yaml");
}

fn main() {}
