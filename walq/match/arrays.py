"""Array consistency: fields met inside one array of objects must be met in the
same element.

event-ruler (and so EventBridge) refuses to let a rule ``{"items": {"sku": ["A"],
"qty": [0]}}`` match ``{"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}]}``:
the two fields are met by peer elements of the same array, which users take for
a bug. Each leaf of a flattened document carries its membership - the
``(array id, index)`` pairs of the arrays around it (walq/match/values.py) - and
two memberships are compatible when every array they share has the same index
in both. A branch that passed its field tests one by one must also find one
satisfying leaf per test whose memberships are pairwise compatible.
"""

from __future__ import annotations


def consistent(branch, flat) -> bool:
    """True if each test of ``branch`` (all already passed) can be met by leaves
    from compatible array elements of ``flat`` (which has ``members``)."""
    arrayed = flat.arrayed
    # Only tests with leaves inside arrays can conflict, and only in pairs.
    if sum(1 for test in branch if test.path in arrayed) < 2:
        return True
    members = flat.members
    options = []
    for test in branch:
        leaves = flat.get(test.path)
        if not leaves:
            continue  # met by absence ({"exists": false})
        per_leaf = members[test.path]
        choices = {per_leaf[i] for i in test.matching(leaves)}
        if () in choices:
            continue  # a leaf outside every array is compatible with all
        options.append(choices)
    if len(options) < 2:
        return True
    options.sort(key=len)
    return _search(options, 0, {})


def _search(options: list, i: int, chosen: dict) -> bool:
    if i == len(options):
        return True
    for membership in options[i]:
        if all(chosen.get(array, index) == index for array, index in membership):
            added = [array for array, _ in membership if array not in chosen]
            for array, index in membership:
                chosen[array] = index
            if _search(options, i + 1, chosen):
                return True
            for array in added:
                del chosen[array]
    return False
