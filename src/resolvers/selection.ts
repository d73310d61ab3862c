import { Kind, type GraphQLResolveInfo } from "graphql";

/**
 * Whether the current field's selection asks for `name` directly under it, so a service can skip
 * work nobody reads. Fragments are answered conservatively (true): the caller then does all the
 * work, as if the field were asked for.
 */
export function selectsField(info: GraphQLResolveInfo, name: string): boolean {
  for (const node of info.fieldNodes) {
    for (const selection of node.selectionSet?.selections ?? []) {
      if (selection.kind !== Kind.FIELD || selection.name.value === name) return true;
    }
  }
  return false;
}
