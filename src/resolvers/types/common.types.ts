import { Field, InputType, Int, ObjectType, type ClassType } from "type-graphql";
import { encodeCursor, type Page } from "../../services/pagination.js";

@ObjectType({ description: "A key/value label." })
export class Tag {
  @Field({ description: "Tag name." })
  key: string;

  @Field({ description: "Tag value." })
  value: string;
}

@InputType({ description: "A key/value label to set." })
export class TagInput {
  @Field({ description: "Up to 250 characters of [A-Za-z0-9_.-/ ]." })
  key: string;

  @Field({ description: "Up to 5,000 characters." })
  value: string;
}

@InputType({ description: "A hyperparameter to log; immutable once logged." })
export class ParamInput {
  @Field({ description: "Up to 250 characters of [A-Za-z0-9_.-/ ]." })
  key: string;

  @Field({ description: "Up to 6,000 characters." })
  value: string;
}

@ObjectType({ description: "Relay page information." })
export class PageInfo {
  @Field({ description: "Whether more items follow this page." })
  hasNextPage: boolean;

  @Field({ description: "Whether items precede this page." })
  hasPreviousPage: boolean;

  @Field(() => String, { nullable: true, description: "Cursor of the first edge." })
  startCursor: string | null;

  @Field(() => String, { nullable: true, description: "Cursor of the last edge; pass it as `after` for the next page." })
  endCursor: string | null;
}

export interface ConnectionShape<T> {
  edges: { node: T; cursor: string }[];
  pageInfo: PageInfo;
  totalCount: number | null;
}

/** Builds the Relay connection and edge types for a node type. */
export function Connection<T extends object>(nodeType: ClassType<T>, name: string) {
  @ObjectType(`${name}Edge`, { description: `An edge to a ${name}.` })
  class Edge {
    @Field(() => nodeType, { description: "The item." })
    node: T;

    @Field({ description: "Opaque position of this item." })
    cursor: string;
  }

  @ObjectType(`${name}Connection`, { description: `A page of ${name} items.` })
  class ConnectionType {
    @Field(() => [Edge], { description: "The items of this page with their cursors." })
    edges: Edge[];

    @Field(() => PageInfo, { description: "Where this page sits." })
    pageInfo: PageInfo;

    @Field(() => Int, { nullable: true, description: "Total matching items, where cheap to count." })
    totalCount: number | null;
  }
  return ConnectionType;
}

/** Converts a service page into a Relay connection. */
export function toConnection<T>(page: Page<T>): ConnectionShape<T> {
  const edges = page.items.map((node, i) => ({ node, cursor: page.cursors?.[i] ?? encodeCursor(page.offset + i) }));
  return {
    edges,
    pageInfo: {
      hasNextPage: page.hasNextPage,
      hasPreviousPage: page.hasPreviousPage,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges[edges.length - 1]?.cursor ?? null,
    },
    totalCount: page.totalCount ?? null,
  };
}
