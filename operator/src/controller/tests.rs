use super::*;

#[test]
fn dependency_index_records_and_forgets() {
    let mut index = DependencyIndex::default();
    let a = ObjectRef::<MCPServer>::new("a").within("ns");
    let b = ObjectRef::<MCPServer>::new("b").within("ns");
    let ing = Dependency::new(DepKind::Ingress, Some("ns"), "web");
    let svc = Dependency::new(DepKind::Service, Some("ns"), "svc");
    index.record(&a, &[ing.clone(), svc.clone()].into());
    index.record(&b, &[ing.clone()].into());
    let mut deps = index.dependents(&ing);
    deps.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(deps, vec![a.clone(), b.clone()]);
    index.record(&a, &[svc.clone()].into());
    assert_eq!(index.dependents(&ing), vec![b.clone()]);
    index.forget(&b);
    assert!(index.dependents(&ing).is_empty());
    assert_eq!(index.dependents(&svc), vec![a]);
}
