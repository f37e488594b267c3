//! A small element tree of an XML answer: AWS's Query protocol (ELBv2, CloudWatch) answers in
//! XML, and this is enough to walk `DescribeRulesResult/Rules/member/...` or
//! `GetMetricDataResult/MetricDataResults/member/...`. Shared by the `ecs` and `cloudwatch`
//! plugins (each compiles it into its own component).

use quick_xml::events::Event;
use quick_xml::Reader;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// Parse a document; its root element.
    pub fn parse(xml: &str) -> Result<Node, String> {
        let mut reader = Reader::from_str(xml);
        let mut stack = vec![Node::default()];
        loop {
            match reader.read_event().map_err(|e| format!("not XML: {e}"))? {
                Event::Start(e) => stack.push(Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Node::default()
                }),
                Event::Empty(e) => {
                    let node = Node {
                        name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                        ..Node::default()
                    };
                    stack.last_mut().unwrap().children.push(node);
                }
                Event::Text(t) => {
                    let text = t.decode().map_err(|e| format!("not XML: {e}"))?;
                    stack.last_mut().unwrap().text.push_str(&text);
                }
                Event::GeneralRef(r) => {
                    let name = r.decode().map_err(|e| format!("not XML: {e}"))?;
                    let reference = format!("&{name};");
                    let text = quick_xml::escape::unescape(&reference)
                        .map_err(|e| format!("not XML: {e}"))?;
                    stack.last_mut().unwrap().text.push_str(&text);
                }
                Event::End(_) => {
                    let done = stack.pop().unwrap();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Err("not XML: unbalanced end tag".into()),
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        stack
            .pop()
            .and_then(|doc| doc.children.into_iter().next())
            .ok_or_else(|| "empty XML document".into())
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Follow child names from here.
    pub fn path(&self, names: &[&str]) -> Option<&Node> {
        names.iter().try_fold(self, |node, name| node.child(name))
    }

    /// The text of a child, trimmed ("" when absent).
    pub fn text_of(&self, name: &str) -> &str {
        self.child(name).map(|c| c.text.trim()).unwrap_or("")
    }

    /// The `member` elements of a list.
    pub fn members(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter(|c| c.name == "member")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_a_query_answer() {
        let doc = Node::parse(
            r#"<?xml version="1.0"?><DescribeRulesResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
            <DescribeRulesResult><Rules><member><RuleArn>arn:a&amp;b</RuleArn><Priority>10</Priority><Conditions/></member>
            <member><RuleArn>arn:c</RuleArn><Priority>default</Priority></member></Rules></DescribeRulesResult></DescribeRulesResponse>"#,
        )
        .unwrap();
        let rules: Vec<_> = doc
            .path(&["DescribeRulesResult", "Rules"])
            .unwrap()
            .members()
            .collect();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].text_of("RuleArn"), "arn:a&b");
        assert_eq!(rules[1].text_of("Priority"), "default");
    }
}
