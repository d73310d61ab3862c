import { Arg, Authorized, Ctx, Field, ID, InputType, Mutation, ObjectType, Query, Resolver } from "type-graphql";
import { ApiToken } from "../entities/api-token.entity.js";
import type { RequestContext } from "../services/context.js";

@ObjectType({ description: "Who is calling." })
export class Principal {
  @Field(() => ID, { description: "Token id, OIDC subject, or \"anonymous\" on an open loopback server." })
  id: string;

  @Field({ description: "Token name or user name." })
  name: string;

  @Field({ description: "viewer, editor, admin, executor or task." })
  role: string;

  @Field({ description: "token, oidc or anonymous." })
  kind: string;
}

@InputType({ description: "A new API token." })
export class CreateApiTokenInput {
  @Field({ description: "What the token is for." })
  name: string;

  @Field({ description: "viewer, editor, admin or executor." })
  role: string;

  @Field(() => Date, { nullable: true, description: "When the token stops working; never when absent." })
  expiresAt?: Date | null;

  @Field(() => String, { nullable: true, description: "For executor tokens: the only pool it may claim from." })
  pool?: string | null;
}

@ObjectType({ description: "A new token with its secret; the secret is shown only this once." })
export class ApiTokenSecret {
  @Field(() => ApiToken, { description: "The token's metadata." })
  token: ApiToken;

  @Field({ description: "Send as `Authorization: Bearer <secret>`. Stored only as a hash." })
  secret: string;
}

@Resolver()
export class TokenResolver {
  @Authorized("viewer")
  @Query(() => Principal, { description: "Who is calling." })
  viewer(@Ctx() ctx: RequestContext): Principal {
    const p = ctx.principal;
    return { id: p.id, name: p.name, role: p.role, kind: p.kind };
  }

  @Authorized("admin")
  @Query(() => [ApiToken], { description: "All API tokens (metadata only), newest first." })
  apiTokens(@Ctx() ctx: RequestContext): Promise<ApiToken[]> {
    return ctx.services.tokens.list(ctx);
  }

  @Authorized("admin")
  @Mutation(() => ApiTokenSecret, { description: "Creates an API token; its secret is in the answer and never again." })
  createApiToken(@Ctx() ctx: RequestContext, @Arg("input", () => CreateApiTokenInput, { description: "The new token." }) input: CreateApiTokenInput) {
    return ctx.services.tokens.create(ctx, { name: input.name, role: input.role, expiresAt: input.expiresAt, scope: input.pool ? { pool: input.pool } : undefined });
  }

  @Authorized("admin")
  @Mutation(() => Boolean, { description: "Revokes a token at once, including live subscriptions that use it." })
  revokeApiToken(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "Token id." }) id: string): Promise<boolean> {
    return ctx.services.tokens.revoke(ctx, id);
  }
}
