"""walq's one matcher: SNS filter policies and EventBridge event patterns.

    from walq.match import compile_filter_policy, compile_pattern, Matcher
    p = compile_filter_policy({"color": ["red", {"prefix": "bl"}]})
    p.matches({"color": "blue"})                      # True
    m = Matcher("attributes")
    m.add("sub-1", {"price": [{"numeric": [">=", 100]}]})
    m.match({"price": 150})                           # {"sub-1"}

Modules: ``compiler`` (parsing, validation, SNS's and EventBridge's error texts),
``conditions`` (one class per operator), ``values`` (messages flattened to
``path -> [leaf]``), ``arrays`` (array consistency), ``policy`` (one compiled
policy), ``index`` (the Matcher).
See docs/match.md.
"""

from walq.match.index import Matcher
from walq.match.policy import Policy, compile_filter_policy, compile_pattern, pattern_matches

__all__ = ["compile_filter_policy", "compile_pattern", "pattern_matches", "Matcher", "Policy"]
